"""Sequence models: `backbone.SequenceModel` (encoder -> blocks -> pool -> decoder) and one file per mixer.

The mixer contract (every file here except backbone.py and params.py implements one):

    class SomeMixer(nn.Module):
        causal: bool                                   # True if y_t depends only on x_{<=t}
        def __init__(self, d_model: int, **options)   # options come from conf/model/<name>.yaml
        def forward(self, x):                          # x: (B, L, D) -> (B, L, D)
        # recurrent mixers also offer
        def initial_state(self, batch_size, device=None, dtype=None) -> state
        def step(self, x_t, state):                    # x_t: (B, D) -> (y_t: (B, D), state)

Mixers know nothing about tasks. Parameters that need their own learning rate or no weight
decay say so with `ssmbench.models.params.set_optim`.
"""
