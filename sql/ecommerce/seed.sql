-- ecommerce scenario: seed data (applied once by the bootstrap, as the owner `demo`).
--
-- Deterministic: no random(). Everything comes from fixed lists, generate_series and integer hashing,
-- so every fresh database holds exactly the same rows (apart from timestamps relative to now()).
--   8 categories, 60 products with base prices, 200 customers in 12 countries,
--   product_catalog (current price = base price, a few products already repriced),
--   500 historical orders over the last two hours, so every stream table has rows right after bootstrap.
-- Each INSERT is guarded, so running the file twice adds nothing.

-- ── categories ────────────────────────────────────────────────────────────────────────────────────────
INSERT INTO categories (name)
VALUES ('Electronics'), ('Clothing'), ('Home & Garden'), ('Books'),
       ('Sports'), ('Food & Drink'), ('Beauty'), ('Toys')
ON CONFLICT (name) DO NOTHING;

-- ── products (60) with base prices ────────────────────────────────────────────────────────────────────
INSERT INTO products (name, category_id, base_price)
SELECT p.name, c.id, p.base_price
FROM (VALUES
    (1,  'Wireless Headphones',      'Electronics',    79.99),
    (2,  'Smart Watch',              'Electronics',   199.99),
    (3,  'USB-C Hub',                'Electronics',    39.99),
    (4,  'Bluetooth Speaker',        'Electronics',    59.99),
    (5,  'Mechanical Keyboard',      'Electronics',   109.99),
    (6,  '4K Monitor',               'Electronics',   329.00),
    (7,  'HD Webcam',                'Electronics',    49.99),
    (8,  'Portable SSD 1TB',         'Electronics',   119.99),
    (9,  'E-Reader',                 'Electronics',   139.99),
    (10, 'T-Shirt',                  'Clothing',       19.99),
    (11, 'Winter Jacket',            'Clothing',      119.99),
    (12, 'Denim Jeans',              'Clothing',       59.99),
    (13, 'Wool Sweater',             'Clothing',       74.99),
    (14, 'Rain Coat',                'Clothing',       89.99),
    (15, 'Canvas Sneakers',          'Clothing',       69.99),
    (16, 'Baseball Cap',             'Clothing',       17.99),
    (17, 'Silk Scarf',               'Clothing',       34.99),
    (18, 'Coffee Maker',             'Home & Garden',  59.99),
    (19, 'Plant Pot Set',            'Home & Garden',  24.99),
    (20, 'Chef''s Knife',            'Home & Garden',  49.99),
    (21, 'Cast Iron Skillet',        'Home & Garden',  39.99),
    (22, 'Garden Hose 25m',          'Home & Garden',  29.99),
    (23, 'LED Desk Lamp',            'Home & Garden',  32.99),
    (24, 'Throw Blanket',            'Home & Garden',  44.99),
    (25, 'Cordless Drill',           'Home & Garden',  84.99),
    (26, 'JavaScript Book',          'Books',          44.99),
    (27, 'Cookbook',                 'Books',          29.99),
    (28, 'Sci-Fi Novel',             'Books',          14.99),
    (29, 'History of Rome',          'Books',          24.99),
    (30, 'Picture Book',             'Books',          12.99),
    (31, 'Travel Guide',             'Books',          19.99),
    (32, 'Poetry Collection',        'Books',          16.99),
    (33, 'Running Shoes',            'Sports',         89.99),
    (34, 'Yoga Mat',                 'Sports',         34.99),
    (35, 'Dumbbell Pair',            'Sports',         54.99),
    (36, 'Tennis Racket',            'Sports',         99.99),
    (37, 'Cycling Helmet',           'Sports',         64.99),
    (38, 'Water Bottle',             'Sports',         14.99),
    (39, 'Fitness Tracker',          'Sports',         79.99),
    (40, 'Protein Powder',           'Food & Drink',   49.99),
    (41, 'Espresso Beans 1kg',       'Food & Drink',   24.99),
    (42, 'Green Tea Sampler',        'Food & Drink',   18.99),
    (43, 'Dark Chocolate Box',       'Food & Drink',   21.99),
    (44, 'Olive Oil 750ml',          'Food & Drink',   16.99),
    (45, 'Hot Sauce Trio',           'Food & Drink',   13.99),
    (46, 'Granola 6-Pack',           'Food & Drink',   22.99),
    (47, 'Face Moisturizer',         'Beauty',         32.99),
    (48, 'Shampoo & Conditioner',    'Beauty',         18.99),
    (49, 'Eau de Parfum 50ml',       'Beauty',         74.99),
    (50, 'Sunscreen SPF50',          'Beauty',         15.99),
    (51, 'Lip Balm Set',             'Beauty',          9.99),
    (52, 'Hair Dryer',               'Beauty',         59.99),
    (53, 'Nail Polish Kit',          'Beauty',         24.99),
    (54, 'LEGO Set',                 'Toys',           64.99),
    (55, 'Puzzle 1000pc',            'Toys',           22.99),
    (56, 'Board Game',               'Toys',           39.99),
    (57, 'Plush Bear',               'Toys',           19.99),
    (58, 'RC Car',                   'Toys',           49.99),
    (59, 'Building Blocks',          'Toys',           29.99),
    (60, 'Watercolour Art Kit',      'Toys',           27.99)
) AS p(pos, name, category, base_price)
JOIN categories c ON c.name = p.category
ORDER BY p.pos
ON CONFLICT (name) DO NOTHING;

-- ── customers (200) in 12 countries ───────────────────────────────────────────────────────────────────
-- Customer i (0..199) lives in slot 1 + (7*i mod 20) of a 20-slot country list (US has 4 slots, GB, DE,
-- FR, IN and BR 2 each, the rest 1): US 40 customers, GB/DE/FR/IN/BR 20, JP/CA/AU/ES/IT/NL 10.
-- The k-th customer of a country is named firsts[k mod 8] + lasts[(k div 8 + k) mod 8] (a bijection on
-- 0..63), and last names differ between countries, so every name is unique: the top-10 ranking, which
-- breaks total_spent ties by name, is deterministic.
INSERT INTO customers (name, country)
SELECT n.firsts[1 + k.k % 8] || ' ' || n.lasts[1 + (k.k / 8 + k.k) % 8], k.code
FROM (
    SELECT s.i, s.code, (row_number() OVER (PARTITION BY s.code ORDER BY s.i) - 1)::int AS k
    FROM (
        SELECT i, (ARRAY['US','GB','DE','US','FR','IN','BR','US','GB','DE',
                         'JP','FR','CA','US','AU','IN','ES','BR','IT','NL'])[1 + (7 * i) % 20] AS code
        FROM generate_series(0, 199) AS i
    ) AS s
) AS k
JOIN (VALUES
    ('US', ARRAY['James','Mary','Robert','Patricia','Michael','Jennifer','David','Linda'],
           ARRAY['Smith','Johnson','Williams','Brown','Jones','Miller','Davis','Wilson']),
    ('GB', ARRAY['Harry','Amelia','George','Isla','Oscar','Poppy','Arthur','Freya'],
           ARRAY['Clarke','Wright','Hughes','Evans','Roberts','Hall','Green','Wood']),
    ('DE', ARRAY['Lukas','Anna','Felix','Lena','Jonas','Marie','Paul','Sophie'],
           ARRAY['Müller','Schmidt','Schneider','Fischer','Weber','Meyer','Wagner','Becker']),
    ('FR', ARRAY['Louis','Camille','Hugo','Léa','Jules','Manon','Gabriel','Inès'],
           ARRAY['Dubois','Moreau','Laurent','Lefebvre','Girard','Bonnet','Fontaine','Rousseau']),
    ('IN', ARRAY['Aarav','Priya','Vihaan','Ananya','Arjun','Diya','Rohan','Isha'],
           ARRAY['Sharma','Patel','Reddy','Nair','Iyer','Gupta','Singh','Kumar']),
    ('BR', ARRAY['Miguel','Júlia','Davi','Beatriz','Rafael','Larissa','Bruno','Fernanda'],
           ARRAY['Silva','Santos','Oliveira','Souza','Costa','Pereira','Almeida','Ferreira']),
    ('JP', ARRAY['Haruto','Yui','Sota','Hina','Ren','Aoi','Yuto','Sakura'],
           ARRAY['Sato','Suzuki','Takahashi','Tanaka','Watanabe','Ito','Yamamoto','Nakamura']),
    ('CA', ARRAY['Liam','Olivia','Noah','Chloe','Ethan','Ava','Logan','Zoe'],
           ARRAY['Tremblay','Gagnon','Roy','Côté','Bouchard','MacDonald','Campbell','Wong']),
    ('AU', ARRAY['Jack','Charlotte','Oliver','Matilda','William','Ruby','Thomas','Mia'],
           ARRAY['Taylor','Anderson','Thompson','White','Walker','Harris','Ryan','Kelly']),
    ('ES', ARRAY['Pablo','Lucía','Alejandro','Sofía','Daniel','Martina','Javier','Carmen'],
           ARRAY['García','Fernández','López','Martínez','Sánchez','Pérez','Gómez','Ruiz']),
    ('IT', ARRAY['Leonardo','Giulia','Francesco','Chiara','Alessandro','Sofia','Matteo','Aurora'],
           ARRAY['Rossi','Russo','Ferrari','Esposito','Bianchi','Romano','Colombo','Ricci']),
    ('NL', ARRAY['Daan','Emma','Sem','Julia','Finn','Tess','Lars','Sanne'],
           ARRAY['de Jong','Jansen','de Vries','van den Berg','van Dijk','Bakker','Visser','Smit'])
) AS n(code, firsts, lasts) ON n.code = k.code
WHERE NOT EXISTS (SELECT 1 FROM customers)
ORDER BY k.i;

-- ── product_catalog: the current price list ───────────────────────────────────────────────────────────
-- Every product starts at its base price, except every sixth one, which was already repriced within
-- ±15 % (so catalog_price_impact has something to show from the start).
INSERT INTO product_catalog (product_id, current_price, updated_at)
SELECT p.id,
       CASE WHEN p.k % 6 = 0
            THEN round(p.base_price * (1 + ((p.k * 37) % 31 - 15) / 100.0), 2)
            ELSE p.base_price END,
       now() - make_interval(mins => p.k::int)
FROM (SELECT id, base_price, row_number() OVER (ORDER BY id) AS k FROM products) AS p
ON CONFLICT (product_id) DO NOTHING;

-- ── historical orders (500 over the last two hours) ───────────────────────────────────────────────────
-- Order i picks popularity ranks floor(200 * u^2) and floor(60 * v^1.5), with u and v in [0, 1) from
-- multiplicative hashing of i (a few customers and products are much busier than the rest, as in a real
-- shop), then maps ranks to rows by a fixed permutation (13*rank mod 200, 7*rank mod 60) so the busy ones
-- are spread over countries and categories. Unit prices lie within ±5 % of the current price.
INSERT INTO orders (customer_id, product_id, quantity, unit_price, ordered_at)
SELECT cust.ids[1 + (13 * floor(cardinality(cust.ids) * h.u * h.u)::int) % cardinality(cust.ids)],
       prod.ids[1 + (7 * floor(cardinality(prod.ids) * power(h.v, 1.5))::int) % cardinality(prod.ids)],
       CASE WHEN h.i % 10 = 0 THEN 3 WHEN h.i % 4 = 0 THEN 2 ELSE 1 END,
       round(pc.current_price * (0.95 + ((h.i * 17) % 11) / 100.0), 2),
       now() - make_interval(secs => (500 - h.i) * 14.4)
FROM (
    SELECT i,
           ((i * 2654435761) % 4294967296) / 4294967296.0 AS u,
           ((i * 2246822519) % 4294967296) / 4294967296.0 AS v
    FROM generate_series(1, 500) AS i
) AS h
CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids FROM customers) AS cust
CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids FROM products) AS prod
JOIN product_catalog pc
  ON pc.product_id = prod.ids[1 + (7 * floor(cardinality(prod.ids) * power(h.v, 1.5))::int) % cardinality(prod.ids)]
WHERE NOT EXISTS (SELECT 1 FROM orders)
ORDER BY h.i;
