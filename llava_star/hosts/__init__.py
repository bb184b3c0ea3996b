"""Hosts: the model libraries the engine attaches to. `llava` is llava-torch 1.2.2."""
