-- finance scenario: the eleven stream tables of the seed's 10-level DAG, in topological order.
--
-- Run by the bootstrap on every bootstrap (as the owner `demo`). All are DIFFERENTIAL (DESIGN.md), so
-- every query uses only operators pg_trickle maintains differentially: joins (stream table with stream
-- table included), GROUP BY with COUNT/SUM/MAX, ROUND/ABS/SQRT over aggregates, CASE, and TopK. There is
-- no scalar subquery over a stream table (upstream's sector_exposure had one and had to run FULL).
-- Formulas: README.md beside this file.
--
--   L1  price_snapshot (2s)     net_positions (1s)
--   L2  position_values         = net_positions ⋈ price_snapshot
--   L3  account_pnl             = position_values by account
--   L4  portfolio_pnl           = account_pnl by portfolio
--   L5  sector_exposure         = position_values by sector, against the book size from portfolio_pnl
--   L6  var_contributions       = position_values ⋈ sector_exposure: parametric VaR per position
--   L7  account_var             = var_contributions by account
--   L8  portfolio_var           = account_var by portfolio ⋈ portfolio_pnl (Basel scenario VaR)
--   L9  regulatory_capital      = portfolio_var ⋈ portfolios (capital limit)
--   L10 breach_dashboard        = top 10 of regulatory_capital by utilisation

-- L1: the price board, one row per instrument.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'price_snapshot',
    query        => $$
        SELECT i.id                                                      AS instrument_id,
               i.symbol,
               i.name                                                    AS instrument_name,
               s.id                                                      AS sector_id,
               s.name                                                    AS sector,
               i.asset_class,
               mp.bid,
               mp.ask,
               mp.mid,
               mp.ask - mp.bid                                           AS spread,
               i.reference_price,
               i.volatility,
               ROUND(100.0 * (mp.mid - i.reference_price) / i.reference_price, 3) AS drift_pct,
               mp.updated_at                                             AS price_updated_at
          FROM market_prices mp
          JOIN instruments i ON i.id = mp.instrument_id
          JOIN sectors s     ON s.id = i.sector_id
    $$,
    schedule     => '2s',
    refresh_mode => 'DIFFERENTIAL'
);

-- L1: net position per (account, instrument) from the trade ledger. position_value is the position's
-- net cost (book value): sum of quantity x fill price.
-- Grouped by the dimension tables' primary keys (a.id = t.account_id, i.id = t.instrument_id through the
-- inner joins: the same groups): PostgreSQL then drops the columns they determine from the grouping
-- (name, portfolio, symbol, sector) and estimates accounts x instruments groups (1,500 with the seed)
-- instead of multiplying the columns' distinct counts across tables (2.25M at 5M trades), so a
-- recomputation (initial fill, FULL, the emulator's refresh) plans a small hash aggregate, never a sort
-- of the whole ledger sized for millions of groups.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'net_positions',
    query        => $$
        SELECT a.id                               AS account_id,
               a.name                             AS account_name,
               a.portfolio_id,
               i.id                               AS instrument_id,
               i.symbol                           AS instrument_symbol,
               i.sector_id,
               COUNT(*)                           AS trade_count,
               SUM(t.quantity)                    AS net_quantity,
               ROUND(SUM(t.quantity * t.price), 2) AS position_value,
               MAX(t.traded_at)                   AS last_trade_at
          FROM trades t
          JOIN accounts a    ON a.id = t.account_id
          JOIN instruments i ON i.id = t.instrument_id
         GROUP BY a.id, a.name, a.portfolio_id, i.id, i.symbol, i.sector_id
    $$,
    schedule     => '1s',
    refresh_mode => 'DIFFERENTIAL'
);

-- L2: positions marked to market: value = net quantity x mid; P&L = value - net cost.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'position_values',
    query        => $$
        SELECT np.account_id,
               np.account_name,
               np.portfolio_id,
               np.instrument_id,
               np.instrument_symbol                                  AS symbol,
               ps.sector_id,
               ps.sector,
               ps.asset_class,
               ps.volatility,
               np.net_quantity,
               ps.mid,
               np.position_value                                     AS cost_value,
               ROUND(np.net_quantity * ps.mid, 2)                    AS market_value,
               ROUND(np.net_quantity * ps.mid - np.position_value, 2) AS unrealized_pnl
          FROM net_positions np
          JOIN price_snapshot ps ON ps.instrument_id = np.instrument_id
         WHERE np.net_quantity <> 0
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L3: per account.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'account_pnl',
    query        => $$
        SELECT account_id,
               account_name,
               portfolio_id,
               COUNT(*)                  AS position_count,
               SUM(market_value)         AS market_value,
               SUM(cost_value)           AS cost_value,
               SUM(unrealized_pnl)       AS pnl,
               SUM(ABS(market_value))    AS gross_exposure
          FROM position_values
         GROUP BY account_id, account_name, portfolio_id
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L4: per portfolio.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'portfolio_pnl',
    query        => $$
        SELECT p.id                                                            AS portfolio_id,
               p.name                                                          AS portfolio_name,
               p.strategy,
               COUNT(*)                                                        AS account_count,
               SUM(ap.position_count)                                          AS position_count,
               SUM(ap.market_value)                                            AS market_value,
               SUM(ap.pnl)                                                     AS pnl,
               SUM(ap.gross_exposure)                                          AS gross_exposure,
               ROUND(100.0 * SUM(ap.pnl) / NULLIF(SUM(ABS(ap.cost_value)), 0), 3) AS return_pct
          FROM account_pnl ap
          JOIN portfolios p ON p.id = ap.portfolio_id
         GROUP BY p.id, p.name, p.strategy
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L5: per sector: gross exposure and its share of the whole book (the book's size comes from
-- portfolio_pnl, joined as an aggregate rather than a scalar subquery).
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'sector_exposure',
    query        => $$
        SELECT pv.sector_id,
               pv.sector,
               COUNT(*)                                                     AS position_count,
               SUM(pv.market_value)                                         AS net_exposure,
               SUM(ABS(pv.market_value))                                    AS gross_exposure,
               SUM(pv.unrealized_pnl)                                       AS pnl,
               ROUND(100.0 * SUM(ABS(pv.market_value)) / NULLIF(book.gross, 0), 3) AS pct_of_book
          FROM position_values pv
         CROSS JOIN (SELECT SUM(gross_exposure) AS gross FROM portfolio_pnl) AS book
         GROUP BY pv.sector_id, pv.sector, book.gross
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L6: parametric 95 % one-day VaR per position: 1.645 x daily volatility x |market value|.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'var_contributions',
    query        => $$
        SELECT pv.account_id,
               pv.portfolio_id,
               pv.instrument_id,
               pv.symbol,
               pv.sector,
               pv.market_value,
               pv.volatility,
               ROUND(1.645 * pv.volatility * ABS(pv.market_value), 2) AS var_95,
               se.pct_of_book                                         AS sector_pct_of_book
          FROM position_values pv
          JOIN sector_exposure se ON se.sector_id = pv.sector_id
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L7: per account: undiversified VaR (sum) and diversified VaR (square root of the sum of squares,
-- positions taken as uncorrelated).
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'account_var',
    query        => $$
        SELECT account_id,
               portfolio_id,
               COUNT(*)                                 AS position_count,
               SUM(market_value)                        AS market_value,
               SUM(var_95)                              AS undiversified_var_95,
               ROUND(SQRT(SUM(var_95 * var_95)), 2)     AS var_95
          FROM var_contributions
         GROUP BY account_id, portfolio_id
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L8: per portfolio: diversified VaR across accounts, P&L, and the Basel scenario VaR (10-day VaR,
-- sqrt(10) x one-day, times the multiplication factor 3).
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'portfolio_var',
    query        => $$
        SELECT pp.portfolio_id,
               pp.portfolio_name,
               pp.pnl,
               pp.market_value,
               COUNT(*)                                                  AS account_count,
               ROUND(SQRT(SUM(av.var_95 * av.var_95)), 2)                AS portfolio_var_95pct,
               ROUND(SQRT(10.0) * SQRT(SUM(av.var_95 * av.var_95)), 2)   AS var_10d_95pct,
               ROUND(3.0 * SQRT(10.0) * SQRT(SUM(av.var_95 * av.var_95)), 2) AS scenario_var
          FROM account_var av
          JOIN portfolio_pnl pp ON pp.portfolio_id = av.portfolio_id
         GROUP BY pp.portfolio_id, pp.portfolio_name, pp.pnl, pp.market_value
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L9: capital required = the Basel scenario VaR; utilisation = required / limit.
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'regulatory_capital',
    query        => $$
        SELECT pv.portfolio_id,
               pv.portfolio_name,
               pv.pnl,
               pv.portfolio_var_95pct,
               pv.scenario_var                                   AS capital_required,
               p.capital_limit,
               ROUND(pv.scenario_var / p.capital_limit, 4)       AS utilization_ratio,
               p.capital_limit - pv.scenario_var                 AS capital_headroom,
               CASE WHEN pv.scenario_var > p.capital_limit THEN 'BREACH'
                    WHEN pv.scenario_var > 0.8 * p.capital_limit THEN 'WARNING'
                    ELSE 'OK' END                                AS capital_status
          FROM portfolio_var pv
          JOIN portfolios p ON p.id = pv.portfolio_id
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);

-- L10: the most capital-constrained portfolios, ranked by utilisation (TopK, at most 10 rows).
SELECT pgtrickle.create_stream_table_if_not_exists(
    name         => 'breach_dashboard',
    query        => $$
        SELECT ROW_NUMBER() OVER (ORDER BY utilization_ratio DESC, portfolio_id) AS rank,
               portfolio_id,
               portfolio_name,
               capital_required,
               capital_limit,
               utilization_ratio,
               capital_status
          FROM regulatory_capital
         ORDER BY utilization_ratio DESC, portfolio_id
         LIMIT 10
    $$,
    schedule     => 'calculated',
    refresh_mode => 'DIFFERENTIAL'
);
