"""A small, hand-written search-buy sample: real-looking products, broad and specific queries.

Used by the demo, tests and benchmarks (`intentflow samples search-buy`). Deterministic for a seed:
queries are drawn with Zipf-like popularity, products from each query's plausible results, and
click/purchase signals from per-(query, product) propensities, so some pairs clear the sampling
thresholds and others (browsed, never bought) do not.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Iterator

# product id: (title, product type, category)
CATALOGUE: dict[str, tuple[str, str, str]] = {
    "P001": ("Skechers Women's Slip-Resistant Work Shoes, Memory Foam, Black", "work shoes", "Shoes"),
    "P002": ("Crocs Unisex Classic Clog, Lightweight Water Shoes", "clogs", "Shoes"),
    "P003": ("Vionic Women's Walker Orthotic Walking Shoes with Arch Support", "walking shoes", "Shoes"),
    "P004": ("Nike Air Zoom Pegasus 40 Men's Road Running Shoes", "running shoes", "Shoes"),
    "P005": ("Brooks Ghost 15 Women's Neutral Running Shoe", "running shoes", "Shoes"),
    "P006": ("Hanes Men's Cushioned Crew Socks, 12-Pack", "socks", "Clothing"),
    "P007": ("Motherhood Maternity Women's Over the Belly Leggings", "maternity leggings", "Clothing"),
    "P008": ("Boppy Total Body Pregnancy Pillow, Removable Cover", "pregnancy pillow", "Baby"),
    "P009": ("Burt's Bees Mama Belly Butter, Stretch Mark Cream, 6.5 oz", "belly butter", "Beauty"),
    "P010": ("Coleman Sundome 4-Person Camping Tent with Rainfly", "tent", "Outdoors"),
    "P011": ("Teton Sports Celsius XXL 0F Sleeping Bag", "sleeping bag", "Outdoors"),
    "P012": ("Black Diamond Spot 400 Headlamp, Waterproof", "headlamp", "Outdoors"),
    "P013": ("Jetboil Flash Camping Stove Cooking System", "camping stove", "Outdoors"),
    "P014": ("LifeStraw Personal Water Filter for Hiking and Camping", "water filter", "Outdoors"),
    "P015": ("Ninja AF101 Air Fryer, 4 Quart, Grey", "air fryer", "Kitchen"),
    "P016": ("Instant Pot Duo 7-in-1 Electric Pressure Cooker, 6 Quart", "pressure cooker", "Kitchen"),
    "P017": ("Lodge 10.25 Inch Cast Iron Skillet, Pre-Seasoned", "skillet", "Kitchen"),
    "P018": ("OXO Good Grips 3-Piece Silicone Spatula Set", "spatula", "Kitchen"),
    "P019": ("Weber Original Kettle 22-Inch Charcoal Grill", "grill", "Outdoors"),
    "P020": ("Cuisinart Grill Tool Set, 14-Piece, Stainless Steel", "grill tools", "Outdoors"),
    "P021": ("Yeti Rambler 20 oz Tumbler with MagSlider Lid", "tumbler", "Kitchen"),
    "P022": ("Leatherman Wave Plus Multitool, Stainless Steel", "multitool", "Tools"),
    "P023": ("Fitbit Charge 6 Fitness Tracker with Heart Rate", "fitness tracker", "Electronics"),
    "P024": ("Anker PowerCore 10000 Portable Charger", "power bank", "Electronics"),
    "P025": ("Mr. Coffee 12-Cup Programmable Coffee Maker", "coffee maker", "Kitchen"),
    "P026": ("Frisco Plush Orthopedic Dog Bed, Large", "dog bed", "Pets"),
    "P027": ("KONG Classic Dog Chew Toy, Medium", "dog toy", "Pets"),
    "P028": ("Puppy Training Pads, Extra Absorbent, 100 Count", "training pads", "Pets"),
    "P029": ("PetSafe Easy Walk No-Pull Dog Harness", "dog harness", "Pets"),
    "P030": ("Nature's Miracle Stain and Odor Remover Spray, 32 oz", "stain remover", "Pets"),
    "P031": ("Amazon Basics Microfiber Bed Sheet Set, Twin XL", "sheet set", "Home"),
    "P032": ("Mainstays Mini Fridge, 3.2 cu ft, Black", "mini fridge", "Appliances"),
    "P033": ("Simple Houseware Over the Door Shoe Organizer", "shoe organizer", "Home"),
    "P034": ("TaoTronics LED Desk Lamp with USB Charging Port", "desk lamp", "Home"),
    "P035": ("Sterilite 3-Drawer Storage Cart, White", "storage drawers", "Home"),
    "P036": ("Gorilla Grip Non-Slip Bath Mat, Machine Washable", "bath mat", "Home"),
    "P037": ("Pampers Swaddlers Newborn Diapers, 84 Count", "diapers", "Baby"),
    "P038": ("Baby Brezza Formula Pro Advanced Formula Dispenser", "formula maker", "Baby"),
    "P039": ("Hatch Rest Baby Sound Machine and Night Light", "sound machine", "Baby"),
    "P040": ("Graco Pack 'n Play Portable Playard", "playard", "Baby"),
}

# query: ([(product id, purchase propensity)], popularity weight). Broad queries spread over types.
QUERIES: dict[str, tuple[list[tuple[str, float]], float]] = {
    "shoes for pregnant women": ([("P001", .35), ("P003", .30), ("P002", .15), ("P004", .02)], 6),
    "gifts for dad": ([("P022", .30), ("P019", .20), ("P020", .25), ("P021", .20), ("P023", .15), ("P006", .05)], 9),
    "camping essentials": ([("P010", .25), ("P011", .20), ("P012", .30), ("P013", .20), ("P014", .30)], 7),
    "new puppy": ([("P026", .25), ("P027", .30), ("P028", .40), ("P029", .25), ("P030", .30)], 6),
    "dorm room must haves": ([("P031", .30), ("P032", .20), ("P033", .20), ("P034", .30), ("P035", .25)], 8),
    "pregnancy must haves": ([("P007", .30), ("P008", .35), ("P009", .30), ("P003", .10)], 5),
    "baby registry": ([("P037", .35), ("P038", .20), ("P039", .30), ("P040", .25)], 5),
    "bbq": ([("P019", .30), ("P020", .30), ("P017", .10)], 4),
    "kitchen gadgets": ([("P015", .25), ("P016", .25), ("P018", .30), ("P017", .15)], 5),
    "standing all day at work": ([("P001", .30), ("P003", .25), ("P006", .20), ("P036", .02)], 3),
    "hiking": ([("P014", .25), ("P012", .20), ("P005", .10), ("P022", .10)], 3),
    "ninja air fryer 4 qt": ([("P015", .45), ("P016", .03)], 4),
    "nike pegasus 40": ([("P004", .40), ("P005", .03)], 4),
    "cast iron skillet": ([("P017", .40)], 3),
    "instant pot 6 quart": ([("P016", .45)], 3),
    "kong dog toy": ([("P027", .45)], 2),
    "coleman tent 4 person": ([("P010", .40), ("P011", .05)], 2),
    "coffee maker": ([("P025", .35), ("P016", .02)], 3),
    "yeti tumbler": ([("P021", .40)], 2),
    "bath mat": ([("P036", .40)], 2),
}


def search_buy_events(n: int = 2000, seed: int = 7, start: datetime | None = None) -> Iterator[dict]:
    rng = random.Random(seed)
    start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
    queries = list(QUERIES)
    weights = [QUERIES[q][1] for q in queries]
    for i in range(n):
        q = rng.choices(queries, weights)[0]
        pid, propensity = rng.choice(QUERIES[q][0])
        title, ptype, cat = CATALOGUE[pid]
        purchased = rng.random() < propensity
        clicked = purchased or rng.random() < 0.3
        yield {
            "type": "search_buy",
            "event_id": f"sb-{seed}-{i}",
            "event_time": (start + timedelta(seconds=i)).isoformat(),
            "session_id": f"s-{seed}-{rng.randrange(n // 3 + 1)}",
            "query": q,
            "product": {"product_id": pid, "title": title, "product_type": ptype, "category": cat},
            "clicked": clicked,
            "added_to_cart": purchased or (clicked and rng.random() < 0.2),
            "purchased": purchased,
        }
