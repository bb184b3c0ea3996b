import contextlib

import torch
from transformers import modeling_utils


@contextlib.contextmanager
def builder_loads_in(dtype: torch.dtype):
    """Make `llava.model.builder.load_pretrained_model` load weights in `dtype`.

    llava's builder hard-codes `torch_dtype=torch.float16`, which is right on a GPU but
    slow and lossy on a CPU (and fp16 matmuls are not available for every CPU op). Inside
    this context every `from_pretrained` gets `torch_dtype=dtype` instead; outside it
    nothing changes.
    """
    original = modeling_utils.PreTrainedModel.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        if "torch_dtype" in kwargs or dtype is not None:
            kwargs["torch_dtype"] = dtype
        return original(cls, *args, **kwargs)

    modeling_utils.PreTrainedModel.from_pretrained = classmethod(from_pretrained)
    try:
        yield
    finally:
        modeling_utils.PreTrainedModel.from_pretrained = classmethod(original)
