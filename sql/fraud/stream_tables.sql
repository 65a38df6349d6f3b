-- fraud scenario: the nine stream tables of the seed's DAG, in topological order.
--
-- Run by the bootstrap on every bootstrap (as the owner `demo`); create_stream_table_if_not_exists makes
-- that a no-op for tables that exist. Names, layers, modes and schedules are those of scenario.toml (the
-- seed's table). risk_scores is FULL (it joins the base stream with two stream tables); every other table
-- is DIFFERENTIAL and uses only operators pg_trickle maintains differentially: joins, GROUP BY with
-- COUNT/SUM/AVG/MAX, COUNT(DISTINCT), ROUND, CASE, and TopK (ORDER BY ... LIMIT 10).
--
--   transactions ─┬─► user_velocity (L1, 1s) ──┬─► risk_scores (L2, FULL, calculated) ─┬─► alert_summary (L3)
--                 ├─► merchant_stats (L1, 1s) ─┘      ▲ (the diamond)                  └─► top_risky_merchants (L3)
--                 └─► category_volume (L1, 1s)        transactions                              │
--   user_velocity ──► country_risk (L2, calculated)                       top_10_risky_merchants (5s) ◄┘
--   merchant_risk_tier + merchants ──► merchant_tier_stats (showcase, 5s)

-- L1: per user: transaction count, total spend, average amount, distinct merchants.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'user_velocity',
    query        => $$
        SELECT u.id                                  AS user_id,
               u.name                                AS user_name,
               u.country,
               COUNT(t.id)                           AS txn_count,
               COALESCE(SUM(t.amount), 0)            AS total_spent,
               COALESCE(ROUND(AVG(t.amount), 2), 0)  AS avg_txn_amount,
               COUNT(DISTINCT t.merchant_id)         AS unique_merchants
          FROM users u
          LEFT JOIN transactions t ON t.user_id = u.id
         GROUP BY u.id, u.name, u.country
    $$,
    schedule     => '1s',
    refresh_mode => 'DIFFERENTIAL'
);

-- L1: per merchant: transaction count, volume, average amount, distinct users (its "normal" baseline).
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'merchant_stats',
    query        => $$
        SELECT m.id                                  AS merchant_id,
               m.name                                AS merchant_name,
               m.category,
               COUNT(t.id)                           AS txn_count,
               COALESCE(SUM(t.amount), 0)            AS total_volume,
               COALESCE(ROUND(AVG(t.amount), 2), 0)  AS avg_txn_amount,
               COUNT(DISTINCT t.user_id)             AS unique_users
          FROM merchants m
          LEFT JOIN transactions t ON t.merchant_id = m.id
         GROUP BY m.id, m.name, m.category
    $$,
    schedule     => '1s',
    refresh_mode => 'DIFFERENTIAL'
);

-- L1: per merchant category: volume, average amount, distinct users and active merchants.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'category_volume',
    query        => $$
        SELECT m.category,
               COUNT(t.id)                           AS txn_count,
               COALESCE(SUM(t.amount), 0)            AS total_volume,
               COALESCE(ROUND(AVG(t.amount), 2), 0)  AS avg_txn_amount,
               COUNT(DISTINCT t.user_id)             AS unique_users,
               COUNT(DISTINCT t.merchant_id)         AS active_merchants
          FROM merchants m
          LEFT JOIN transactions t ON t.merchant_id = m.id
         GROUP BY m.category
    $$,
    schedule     => '1s',
    refresh_mode => 'DIFFERENTIAL'
);

-- L2 (the diamond): every transaction scored against its user's and merchant's current aggregates.
--   HIGH    the user has at least 5 transactions and the amount is over 3x the user's average, or over
--           2x at a Crypto or Gambling merchant
--   MEDIUM  the amount is over 2x the user's average, or over the average at a Crypto/Gambling merchant
--   LOW     everything else
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'risk_scores',
    query        => $$
        SELECT t.id                                          AS txn_id,
               t.user_id,
               u.name                                        AS user_name,
               u.country                                     AS user_country,
               t.merchant_id,
               m.name                                        AS merchant_name,
               m.category                                    AS merchant_category,
               t.amount,
               t.txn_at,
               COALESCE(uv.txn_count, 0)                     AS user_txn_count,
               COALESCE(uv.avg_txn_amount, t.amount)         AS user_avg_amount,
               COALESCE(ms.avg_txn_amount, t.amount)         AS merchant_avg_amount,
               CASE
                   WHEN COALESCE(uv.txn_count, 0) >= 5
                        AND (t.amount > 3 * uv.avg_txn_amount
                             OR (m.category IN ('Crypto', 'Gambling') AND t.amount > 2 * uv.avg_txn_amount))
                       THEN 'HIGH'
                   WHEN t.amount > 2 * COALESCE(uv.avg_txn_amount, t.amount)
                        OR (m.category IN ('Crypto', 'Gambling') AND t.amount > COALESCE(uv.avg_txn_amount, t.amount))
                       THEN 'MEDIUM'
                   ELSE 'LOW'
               END                                           AS risk_level
          FROM transactions t
          JOIN users u     ON u.id = t.user_id
          JOIN merchants m ON m.id = t.merchant_id
          LEFT JOIN user_velocity  uv ON uv.user_id = t.user_id
          LEFT JOIN merchant_stats ms ON ms.merchant_id = t.merchant_id
    $$,
    schedule     => 'calculated',
    refresh_mode => 'FULL'
);

-- risk_scores keeps one row per transaction. The dashboard's live feed reads its newest HIGH rows; this
-- partial index keeps that read independent of the history (a stream table is an ordinary heap table, so
-- it may carry indexes of its own; refreshes maintain them like any other).
CREATE INDEX IF NOT EXISTS risk_scores_high_feed ON risk_scores (txn_at DESC, txn_id DESC) WHERE risk_level = 'HIGH';

-- L2: per country, rolled up from user_velocity.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'country_risk',
    query        => $$
        SELECT country,
               COUNT(*)                        AS user_count,
               SUM(txn_count)                  AS total_txns,
               SUM(total_spent)                AS total_volume,
               ROUND(AVG(avg_txn_amount), 2)   AS avg_txn_amount,
               SUM(unique_merchants)           AS total_merchant_visits
          FROM user_velocity
         WHERE txn_count > 0
         GROUP BY country
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L3: per risk level: counts, totals, last seen.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'alert_summary',
    query        => $$
        SELECT risk_level,
               COUNT(*)                 AS txn_count,
               SUM(amount)              AS total_amount,
               ROUND(AVG(amount), 2)    AS avg_amount,
               MAX(txn_at)              AS last_seen_at
          FROM risk_scores
         GROUP BY risk_level
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L3: per merchant: how many of its transactions are HIGH / MEDIUM / LOW risk.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'top_risky_merchants',
    query        => $$
        SELECT merchant_id,
               merchant_name,
               merchant_category,
               COUNT(*)                                                  AS total_txns,
               SUM(CASE WHEN risk_level = 'HIGH' THEN 1 ELSE 0 END)      AS high_risk_count,
               SUM(CASE WHEN risk_level = 'MEDIUM' THEN 1 ELSE 0 END)    AS medium_risk_count,
               SUM(CASE WHEN risk_level = 'LOW' THEN 1 ELSE 0 END)       AS low_risk_count,
               ROUND(100.0 * SUM(CASE WHEN risk_level IN ('HIGH', 'MEDIUM') THEN 1 ELSE 0 END)
                     / NULLIF(COUNT(*), 0), 1)                            AS risk_rate_pct
          FROM risk_scores
         GROUP BY merchant_id, merchant_name, merchant_category
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- Showcase #1: merchant risk tiers. Reads only the slowly-changing merchant_risk_tier (one row changes
-- about every 30 cycles) and the static merchants: a refresh touches 1 of 15 rows.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'merchant_tier_stats',
    query        => $$
        SELECT r.merchant_id,
               m.name                                                          AS merchant_name,
               m.category,
               r.tier                                                          AS merchant_tier,
               CASE r.tier WHEN 'HIGH' THEN 3 WHEN 'ELEVATED' THEN 2 ELSE 1 END AS risk_score,
               r.updated_at                                                    AS tier_last_changed
          FROM merchant_risk_tier r
          JOIN merchants m ON m.id = r.merchant_id
    $$,
    schedule     => '5s',
    refresh_mode => 'DIFFERENTIAL'
);

-- Showcase #2: the ten merchants with the most HIGH-risk transactions (TopK over top_risky_merchants):
-- a fixed 10-row output where only rank changes produce row changes. Ties broken by name, then id.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'top_10_risky_merchants',
    query        => $$
        SELECT ROW_NUMBER() OVER (ORDER BY high_risk_count DESC, merchant_name, merchant_id) AS rank,
               merchant_id,
               merchant_name,
               merchant_category,
               total_txns,
               high_risk_count,
               medium_risk_count,
               low_risk_count,
               risk_rate_pct
          FROM top_risky_merchants
         ORDER BY high_risk_count DESC, merchant_name, merchant_id
         LIMIT 10
    $$,
    schedule     => '5s',
    refresh_mode => 'DIFFERENTIAL'
);
