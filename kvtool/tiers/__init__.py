"""Tiers: what a cache level is (``spec``: capacity, speed, price, parsed from ``tier_gb``) and
how many bytes a token's KV takes (``kv``). Nothing here simulates; ``kvtool.simulate`` does."""
