-- fraud scenario: deterministic seed rows (no random(): the same data on every bootstrap).
-- 60 users in 14 countries, 15 merchants in 8 categories (their risk tiers), 480 ordinary historical
-- transactions (8 per user) and 3 historical suspicious bursts, so every stream table, and the seed's
-- HIGH-risk query, has rows right after the bootstrap.

INSERT INTO users (name, country, account_age_days)
SELECT (ARRAY['Alice', 'Bruno', 'Chiara', 'Dmitri', 'Elena', 'Farid', 'Grace', 'Hiro', 'Ines', 'Jonas',
              'Keiko', 'Luis', 'Maya', 'Nils', 'Olga', 'Pavel', 'Quinn', 'Rosa', 'Sanjay', 'Tomas'])[1 + (i - 1) % 20]
       || ' ' ||
       (ARRAY['Almeida', 'Berger', 'Costa', 'Dubois', 'Eriksen', 'Fischer', 'Garcia', 'Hansen', 'Ivanova',
              'Jensen', 'Kowalski', 'Larsen', 'Moreau', 'Novak', 'Okafor'])[1 + ((i - 1) * 7) % 15],
       (ARRAY['US', 'GB', 'DE', 'FR', 'BR', 'IN', 'JP', 'NG', 'SE', 'MX', 'KR', 'AE', 'IT', 'CA'])[1 + (i * 5) % 14],
       90 + (i * 97) % 2500
  FROM generate_series(1, 60) AS i
 WHERE NOT EXISTS (SELECT 1 FROM users);

INSERT INTO merchants (name, category, country)
SELECT name, category, country
  FROM (VALUES
        ('Northwind Grocers', 'Grocery', 'US'), ('FreshCart', 'Grocery', 'GB'),
        ('SkyHop Travel', 'Travel', 'DE'), ('Harbor Stays', 'Travel', 'FR'),
        ('VoltMart', 'Electronics', 'US'), ('Pixel Corner', 'Electronics', 'KR'),
        ('Noodle Bar 88', 'Food', 'JP'), ('Green Bowl', 'Food', 'SE'),
        ('CityPharm', 'Pharmacy', 'US'),
        ('MegaStore', 'Retail', 'US'), ('Atelier Nord', 'Retail', 'SE'),
        ('CoinVault Exchange', 'Crypto', 'SG'), ('BlockSwap', 'Crypto', 'BS'),
        ('Lucky Reels Casino', 'Gambling', 'MT'), ('BetStream', 'Gambling', 'GI')) AS m(name, category, country)
 WHERE NOT EXISTS (SELECT 1 FROM merchants);

-- Risk tiers: Crypto merchants start HIGH, Gambling ELEVATED, the rest STANDARD.
INSERT INTO merchant_risk_tier (merchant_id, tier)
SELECT id, CASE category WHEN 'Crypto' THEN 'HIGH' WHEN 'Gambling' THEN 'ELEVATED' ELSE 'STANDARD' END
  FROM merchants
ON CONFLICT (merchant_id) DO NOTHING;

-- 480 ordinary transactions over the last hour: each user 8 times, spread over all merchants.
INSERT INTO transactions (user_id, merchant_id, amount, txn_at)
SELECT u.id, m.id, round((5 + (i * 37) % 180 + ((i * 13) % 100) / 100.0)::numeric, 2),
       now() - (480 - i) * interval '7 seconds'
  FROM generate_series(1, 480) AS i
  JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM users) u ON u.n = 1 + (i * 7) % 60
  JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM merchants) m ON m.n = 1 + (i * 11) % 15
 WHERE NOT EXISTS (SELECT 1 FROM transactions);

-- Three historical suspicious bursts: 8 escalating transactions (x1.6 each) at Crypto/Gambling merchants.
INSERT INTO transactions (user_id, merchant_id, amount, txn_at)
SELECT u.id, m.id, round((250 * power(1.6, k - 1))::numeric, 2),
       now() - (3 - b) * interval '15 minutes' + k * interval '2 seconds'
  FROM generate_series(1, 3) AS b
 CROSS JOIN generate_series(1, 8) AS k
  JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM users) u ON u.n = b * 17
  JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM merchants WHERE category IN ('Crypto', 'Gambling')) m
    ON m.n = 1 + (b + k) % 4
 WHERE (SELECT count(*) FROM transactions) = 480;
