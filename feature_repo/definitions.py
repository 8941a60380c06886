"""Feast definitions: entities, push sources over Parquet folders, and the feature views.

Declarative only: nothing here connects to anything or writes files. Every view carries the same
lineage columns (which edges, models, prompt and critic versions; event, generated and pushed
times; freshness = pushed - event time of the edge that caused the update).
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Float64, Int64, String

from generators.relations import RELATIONS

query = Entity(name="query", join_keys=["query_id"], value_type=ValueType.STRING,
               description="a normalised search query (join key: blake2b-64 of the normalised text)")
product = Entity(name="product", join_keys=["product_id"], value_type=ValueType.STRING, description="a product id")
product_pair = Entity(name="product_pair", join_keys=["pair_id"], value_type=ValueType.STRING,
                      description="two co-purchased products: 'lo|hi' of their sorted ids")

LINEAGE = [
    Field(name="edge_ids", dtype=Array(String)), Field(name="models", dtype=Array(String)),
    Field(name="prompt_versions", dtype=Array(String)), Field(name="critic_versions", dtype=Array(String)),
    Field(name="n_edges", dtype=Int64), Field(name="event_time", dtype=Float64),
    Field(name="generated_at", dtype=Float64), Field(name="last_event_time", dtype=Float64),
    Field(name="pushed_at", dtype=Float64), Field(name="freshness_s", dtype=Float64),
]
TTL = timedelta(days=365)


def _view(name: str, entity: Entity, fields: list[Field], description: str) -> tuple[FileSource, PushSource, FeatureView]:
    # A folder of Parquet parts (feature_repo/offline.py appends one part per batched write).
    batch = FileSource(name=f"{name}_offline", path=f"offline/{name}", timestamp_field="event_timestamp")
    push = PushSource(name=f"{name}_push", batch_source=batch)
    view = FeatureView(name=name, entities=[entity], ttl=TTL, source=push, online=True,
                       schema=fields + LINEAGE, description=description)
    return batch, push, view


query_intents_sources = _view("query_intents", query, [
    Field(name="query_text", dtype=String), Field(name="intents", dtype=Array(String)),
    Field(name="intent_relations", dtype=Array(String)), Field(name="intent_scores", dtype=Array(Float32)),
], "what shoppers searching this query intend: top tails across relations by decayed score")

product_knowledge_sources = _view("product_knowledge", product, [
    Field(name="title", dtype=String), Field(name="product_type", dtype=String),
    *[f for r in RELATIONS for f in (Field(name=r, dtype=Array(String)), Field(name=f"{r}_scores", dtype=Array(Float32)))],
], "key-values per relation: top-k tails (and scores) explaining why this product is bought")

product_subcategory_sources = _view("product_subcategory", product, [
    Field(name="subcategory", dtype=String), Field(name="subcategory_relation", dtype=String),
    Field(name="subcategory_score", dtype=Float32),
], "semantic subcategory: the best isA tail, else '<product type> for <best use>'")

co_purchase_reasons_sources = _view("co_purchase_reasons", product_pair, [
    Field(name="product_a_id", dtype=String), Field(name="product_b_id", dtype=String),
    Field(name="reasons", dtype=Array(String)), Field(name="reason_relations", dtype=Array(String)),
    Field(name="reason_scores", dtype=Array(Float32)),
], "why two products are bought together")

ENTITIES = [query, product, product_pair]
VIEWS = {s[2].name: s for s in (query_intents_sources, product_knowledge_sources, product_subcategory_sources,
                                co_purchase_reasons_sources)}
OBJECTS = [*ENTITIES, *(o for s in VIEWS.values() for o in s)]
