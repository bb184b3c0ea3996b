"""Small, named monkey patches of `llava` and `transformers`.

Each patch is one function with a docstring that says what it changes and why.
They are applied by `llava_star` where needed, never on import.
"""
from .rotary import rotary_table_covers_positions
from .builder_dtype import builder_loads_in

__all__ = ["rotary_table_covers_positions", "builder_loads_in"]
