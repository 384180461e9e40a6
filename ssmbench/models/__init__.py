"""Sequence models: `backbone.SequenceModel` (encoder -> blocks -> pool -> decoder) and one mixer per module.

The mixer contract (every module here implements one, except the shared parts: backbone.py, params.py,
dropout.py, short_conv.py, step_size.py and kernel_conv.py; a mixer with helpers of its own is a package,
e.g. nrnn/ = mixer.py + cells.py):

    class SomeMixer(nn.Module):
        causal: bool                                   # True if y_t depends only on x_{<=t}
        def __init__(self, d_model: int, **options)   # options come from conf/model/<name>.yaml
        def forward(self, x):                          # x: (B, L, D) -> (B, L, D)
        # recurrent mixers also offer
        def initial_state(self, batch_size, device=None, dtype=None) -> state
        def step(self, x_t, state):                    # x_t: (B, D) -> (y_t: (B, D), state)

Mixers know nothing about tasks. Parameters that need their own learning rate or no weight
decay say so with `ssmbench.models.params.set_optim`.

One vocabulary: the same idea has the same name in every config key, argument, attribute and
docstring (conf/, models/, core/, README). New code follows this table:

    idea                            name
    number of heads                 num_heads
    state size (per layer / cell)   d_state
    a parameter's own learning rate ssm_lr in configs, absolute (a published "factor x base lr" is
                                    written ssm_lr: ${mul:${optimizer.lr},factor});
                                    set_optim(param, lr=..., weight_decay=...) in code
    dt's own learning rate          dt_lr, absolute like ssm_lr (null: ssm_lr)
    dropout mask shared over time   tie_dropout
    range of the delta rule's beta  beta_range: [0, 1] | [0, 2] (beta = sigmoid or 2 sigmoid)
    short causal conv before a      use_short_conv, conv_size (DeltaNet family, linear attention, minRNNs;
      recurrence                    Mamba, Mamba-2 and Hawk keep their papers' d_conv)
    hidden width / d_model          expand (expand_k, expand_v for key and value widths)
    Jacobian of a Newton solve      jacobian: diag | full (core/newton.py); nrnn adds none
                                    (no Newton: the sequential loop)
    slow reference of a fast path   <name>_reference (linear_scan_reference, cauchy_reference,
                                    newton_solve_reference, ...), beside it in core/

Keys renamed to this vocabulary are still read, with a warning, from stored configs and the
command line for one release (`ssmbench.deprecations`).
"""
