"""The synthetic 3-D heads world: procedural heads with known identity and attributes.

See docs/synthetic_world.md.
"""
