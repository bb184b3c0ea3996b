"""Pure tensor functions: scoring visual tokens and selecting which to keep (no model code)."""
