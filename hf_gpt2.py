"""
Our weights in Hugging Face's GPT2LMHeadModel, for the tests and benchmarks that compare this
repository with transformers on the same model (beam search, assisted generation, speed).

    hf = hf_gpt2.hf_copy(model)       # logits equal to model's, to float rounding
"""
from transformers import GPT2Config, GPT2LMHeadModel


def hf_copy(model):
    """Hugging Face's GPT-2 with our weights: Conv1D stores (in, out), nn.Linear (out, in)."""
    c = model.config
    cfg = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                     n_head=c.n_head, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=None, eos_token_id=None,
                     pad_token_id=0)
    hf = GPT2LMHeadModel(cfg).eval()
    state = {}
    for name, w in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to transformer.wte.weight in both models
        if name.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")):
            w = w.t()
        state[name] = w.clone()
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert missing == ["lm_head.weight"] and unexpected == []
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    return hf
