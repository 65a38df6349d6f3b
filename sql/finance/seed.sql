-- finance scenario: deterministic seed rows (no random()).
-- 8 sectors, 30 instruments, 5 portfolios of 10 accounts, quotes at the reference prices, and 750
-- historical trades (mostly buys) so that every stream table has rows right after the bootstrap.

INSERT INTO sectors (name)
SELECT s FROM unnest(ARRAY['Technology', 'Financials', 'Healthcare', 'Energy', 'Consumer', 'Industrials',
                           'Materials', 'Utilities']) AS s
 WHERE NOT EXISTS (SELECT 1 FROM sectors);

INSERT INTO instruments (symbol, name, sector_id, asset_class, reference_price, volatility)
SELECT i.symbol, i.name, s.id, i.asset_class, i.reference_price, i.volatility
  FROM (VALUES
        ('NOVA', 'Nova Semiconductors', 'Technology', 'EQUITY', 412.50, 0.0240),
        ('CLDX', 'Cloudex Systems', 'Technology', 'EQUITY', 188.20, 0.0210),
        ('QBIT', 'Qubit Labs', 'Technology', 'EQUITY', 64.75, 0.0330),
        ('TECH.E', 'Global Tech ETF', 'Technology', 'ETF', 97.40, 0.0150),
        ('HBNK', 'Harbor Bank', 'Financials', 'EQUITY', 52.10, 0.0170),
        ('ALPS', 'Alpine Insurance', 'Financials', 'EQUITY', 133.90, 0.0140),
        ('FINX', 'Fintrax Payments', 'Financials', 'EQUITY', 221.30, 0.0190),
        ('MEDI', 'Medivance', 'Healthcare', 'EQUITY', 145.60, 0.0160),
        ('GENO', 'Genomica', 'Healthcare', 'EQUITY', 38.25, 0.0310),
        ('CURA', 'Cura Pharma', 'Healthcare', 'EQUITY', 92.80, 0.0150),
        ('HLTH.E', 'Healthcare Select ETF', 'Healthcare', 'ETF', 141.10, 0.0110),
        ('PETR', 'Petrolux', 'Energy', 'EQUITY', 78.40, 0.0220),
        ('SOLR', 'Solaris Power', 'Energy', 'EQUITY', 26.90, 0.0350),
        ('BRNT', 'Brent Crude Trust', 'Energy', 'COMMODITY', 83.15, 0.0250),
        ('GASN', 'Gasnet Midstream', 'Energy', 'EQUITY', 41.70, 0.0180),
        ('SHOP', 'Shopwell', 'Consumer', 'EQUITY', 167.30, 0.0200),
        ('BEVR', 'Beverage Union', 'Consumer', 'EQUITY', 59.60, 0.0110),
        ('LUXE', 'Luxe Maison', 'Consumer', 'EQUITY', 312.00, 0.0210),
        ('FOOD', 'Foodland Markets', 'Consumer', 'EQUITY', 47.35, 0.0120),
        ('AERO', 'Aerodyne', 'Industrials', 'EQUITY', 198.45, 0.0180),
        ('RAIL', 'Continental Rail', 'Industrials', 'EQUITY', 121.70, 0.0140),
        ('ROBO', 'Robotix Automation', 'Industrials', 'EQUITY', 88.90, 0.0260),
        ('INDU.E', 'Industrials ETF', 'Industrials', 'ETF', 110.25, 0.0120),
        ('GOLD', 'Gold Bullion Trust', 'Materials', 'COMMODITY', 185.60, 0.0130),
        ('COPR', 'Copperfield Mining', 'Materials', 'EQUITY', 36.80, 0.0290),
        ('CHEM', 'Chemvale', 'Materials', 'EQUITY', 72.45, 0.0170),
        ('GRID', 'Gridline Utilities', 'Utilities', 'EQUITY', 68.20, 0.0100),
        ('AQUA', 'Aqua Services', 'Utilities', 'EQUITY', 54.30, 0.0090),
        ('TBND', 'Treasury Bond Fund', 'Utilities', 'BOND', 99.10, 0.0040),
        ('CBND', 'Corporate Bond Fund', 'Utilities', 'BOND', 103.60, 0.0050))
       AS i(symbol, name, sector, asset_class, reference_price, volatility)
  JOIN sectors s ON s.name = i.sector
 WHERE NOT EXISTS (SELECT 1 FROM instruments);

INSERT INTO portfolios (name, manager, strategy, capital_limit)
SELECT name, manager, strategy, capital_limit
  FROM (VALUES ('Aurora Growth', 'A. Lindqvist', 'MOMENTUM', 62000.00),
               ('Boreal Income', 'B. Okafor', 'VALUE', 80000.00),
               ('Cascade Balanced', 'C. Moreau', 'BALANCED', 70000.00),
               ('Delta Quant', 'D. Tanaka', 'QUANT', 55000.00),
               ('Equinox Macro', 'E. Novak', 'MACRO', 90000.00))
       AS p(name, manager, strategy, capital_limit)
 WHERE NOT EXISTS (SELECT 1 FROM portfolios);

INSERT INTO accounts (name, portfolio_id)
SELECT upper(left(p.name, 3)) || '-' || lpad(n::text, 3, '0'), p.id
  FROM portfolios p CROSS JOIN generate_series(1, 10) AS n
 WHERE NOT EXISTS (SELECT 1 FROM accounts)
 ORDER BY p.id, n;

-- Quotes at the reference price with a 5-basis-point spread (at least 2 ticks of 0.0001).
INSERT INTO market_prices (instrument_id, bid, ask)
SELECT id, reference_price - greatest(round(reference_price * 0.00025, 4), 0.0001),
           reference_price + greatest(round(reference_price * 0.00025, 4), 0.0001)
  FROM instruments
ON CONFLICT (instrument_id) DO NOTHING;

-- 750 historical trades: every account trades 15 times across the instruments; 4 in 5 are buys.
INSERT INTO trades (account_id, instrument_id, quantity, price, traded_at)
SELECT a.id, i.id,
       CASE WHEN k % 5 = 0 THEN -1 ELSE 1 END * (10 + (k * 37) % 190),
       round(i.reference_price * (1 + ((k * 17) % 21 - 10) / 1000.0), 4),
       now() - (750 - k) * interval '5 seconds'
  FROM generate_series(1, 750) AS k
  JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM accounts) a ON a.n = 1 + (k * 7) % 50
  JOIN (SELECT id, reference_price, row_number() OVER (ORDER BY id) AS n FROM instruments) i
    ON i.n = 1 + (k * 11 + k / 50) % 30
 WHERE NOT EXISTS (SELECT 1 FROM trades);
