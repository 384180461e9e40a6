"""S5 (Smith, Warrington, Linderman, "Simplified State Space Layers for Sequence Modeling", ICLR 2023), as a
mixer of the shared backbone.

The S5 layer, u: (B, L, H) real -> y: (B, L, H) real, is ONE multi-input multi-output linear SSM with
P = d_state complex states, diagonal in the eigenbasis of its state matrix, one timescale per state:

    Lambda = Lambda_re + i Lambda_im                        (P/2,)  (clip_eigs: Re clipped to <= -1e-4)
    dt     = step_rescale * exp(log_step)                   (P/2,)
    zoh:       Ab = exp(dt Lambda),                          Bb = (Ab - 1) / Lambda * B~
    bilinear:  Ab = (1 + dt/2 Lambda) / (1 - dt/2 Lambda),   Bb = dt B~ / (1 - dt/2 Lambda)
    x_t    = Ab * x_{t-1} + Bb u_t                          (B, L, P/2) complex, x_{-1} = 0; Bb, B~ (P/2, H)
    y_t    = 2 Re(C~ x_t) + D * u_t                         C~ (H, P/2) complex, D (H,)

Conjugate symmetry: the states of a real system come in conjugate pairs, so one of each is stored and
computed (P/2) and the pair's real output is 2 Re(.). bidirectional=True adds the reverse scan
z_t = Ab * z_{t+1} + Bb u_t (z_L = 0), read by a second output matrix: y_t += 2 Re(C~2 z_t); the layer is
then not causal and has no `step()`. Both scans are `ssmbench.core.scan.linear_scan`.

Initialization (lindermanlab/S5@d133f4d: s5/ssm.py, s5/ssm_init.py, s5/train.py):
  Lambda   the eigenvalues of HiPPO-N, the normal part of HiPPO-LegS (Re = -1/2), block-diagonal with
           `blocks` (the paper's J) copies of the HiPPO-N of size P/J: `core.hippo.hippo_normal` -> (Lambda, V).
  B~       V^* B with B (P, H) real lecun normal as S5's code draws it: jax's lecun_normal takes the fan-in
           from axis -2 of the (P, H) array, so the variance is 1/P.
  C~       c_init = trunc_standard_normal: C V, C (H, P) complex, Re and Im lecun normal per row (variance 1/P);
                    lecun_normal:          C V, Re and Im lecun normal over the (H, P) array (variance 1/(H P));
                    complex_normal:        C~ itself, Re and Im ~ N(0, 1/2) (no V).
           bidirectional: a second C~ drawn the same way.
  D ~ N(0, 1);  log_step log-uniform in [log dt_min, log dt_max], one per state.
("lecun normal": a normal truncated at two standard deviations and rescaled to variance 1 / fan-in.)
S5's eigensolver keeps the half with Im(Lambda) <= 0, `hippo_normal` the conjugate half; the layers are the same
in distribution (identical for real B and C).

B~ and C~ are stored as real (..., 2) pairs, as S5's code stores them (`Module.to(half)` would otherwise
drop an imaginary part). Computations run in float64 for float64 inputs, else in float32.

Optimization (S5's opt_config "standard", s5/train_helpers.py): Lambda_re, Lambda_im and B train with their
own learning rate `ssm_lr` and no weight decay, log_step too (its lr `dt_lr`, None: ssm_lr); C and D use the
base lr and weight decay. log_step never gets weight decay here: S5's dt_global=True moves it into the
"regular" adamw group, base lr AND weight decay (dt_lr = the base lr expresses only the lr). S5 states its
base lr as lr_factor x ssm_lr.

The S5 block (s5/layers.py) is norm -> S5 -> activation -> dropout -> residual. The backbone supplies the norm,
the last dropout and the residual (`ff: none`); `S5Mixer` is S5 and the activation, one of S5's
`activation` options, with gelu the tanh approximation (flax's nn.gelu) and z = dropout(gelu(y)):

    full_glu   W1 z * sigmoid(W2 z)        half_glu1  z * sigmoid(W2 z)
    half_glu2  y * sigmoid(W2 z)           gelu       gelu(y)  (S5's one dropout is the backbone's)

W1, W2 (S5's out1, out2) are lecun normal (variance 1/H) with zero biases, flax Dense's defaults.
S5's dropout draws one mask per sequence for all time steps (flax broadcast_dims over time): tie_dropout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.discretize import bilinear_diag, zoh_diag
from ssmbench.core.hippo import hippo_normal
from ssmbench.core.scan import linear_scan
from ssmbench.models.dropout import SequenceDropout
from ssmbench.models.params import set_optim
from ssmbench.models.step_size import log_uniform_dt

C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
DISCRETIZATIONS = {"zoh": zoh_diag, "bilinear": bilinear_diag}
ACTIVATIONS = ("full_glu", "half_glu1", "half_glu2", "gelu")
MAX_REAL = -1e-4               # clip_eigs: Re(Lambda) <= -1e-4 (S5's s5/ssm.py)
TRUNCATED_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2] (jax's variance_scaling)


def lecun_normal(*shape: int, fan_in: int) -> torch.Tensor:
    """A float64 tensor of `shape` from a normal truncated at two standard deviations, variance 1 / fan_in."""
    std = 1 / math.sqrt(fan_in) / TRUNCATED_STD
    return nn.init.trunc_normal_(torch.empty(shape, dtype=torch.float64), std=std, a=-2 * std, b=2 * std)


def init_output_matrix(c_init: str, d_model: int, V: torch.Tensor) -> torch.Tensor:
    """C~ (H, P/2) complex128 for V (P, P/2) the eigenvectors of the state matrix (module docstring)."""
    if c_init == "complex_normal":
        shape = (d_model, V.shape[1])
        re, im = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
        return torch.complex(re, im) * math.sqrt(0.5)
    P = V.shape[0]
    fan_in = P if c_init == "trunc_standard_normal" else P * d_model
    return torch.complex(lecun_normal(d_model, P, fan_in=fan_in), lecun_normal(d_model, P, fan_in=fan_in)) @ V


def _real_pairs(z: torch.Tensor) -> torch.Tensor:
    """A complex tensor (...) as float32 (..., 2) real and imaginary parts."""
    return torch.view_as_real(z.to(torch.complex64)).clone()


def _check_options(d_state: int, blocks: int, c_init: str, disc: str, dt_min: float, dt_max: float,
                   step_rescale: float) -> None:
    """ValueError naming the first option of S5SSM that is out of range."""
    if not (isinstance(blocks, int) and blocks >= 1 and d_state >= 2 and d_state % (2 * blocks) == 0):
        raise ValueError(f"s5: d_state={d_state} must be a positive multiple of 2 x blocks (blocks={blocks}): "
                         f"each of the blocks holds d_state/blocks states in conjugate pairs")
    if c_init not in C_INITS:
        raise ValueError(f"s5: c_init={c_init!r} is not one of {list(C_INITS)}")
    if disc not in DISCRETIZATIONS:
        raise ValueError(f"s5: disc={disc!r} is not one of {list(DISCRETIZATIONS)}")
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"s5: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if not step_rescale > 0:
        raise ValueError(f"s5: step_rescale={step_rescale} must be positive")


class S5SSM(nn.Module):
    """The S5 layer (module docstring): (B, L, H) real -> (B, L, H) real, state (B, P/2) complex."""

    def __init__(self, d_model: int, d_state: int = 256, blocks: int = 8, c_init: str = "trunc_standard_normal",
                 disc: str = "zoh", dt_min: float = 1e-3, dt_max: float = 1e-1, clip_eigs: bool = False,
                 bidirectional: bool = False, step_rescale: float = 1.0, ssm_lr: float | None = None,
                 dt_lr: float | None = None):
        """ssm_lr: the lr of Lambda_re, Lambda_im and B (None: the base one); dt_lr: log_step's (None: ssm_lr)."""
        super().__init__()
        _check_options(d_state, blocks, c_init, disc, dt_min, dt_max, step_rescale)
        self.disc, self.clip_eigs, self.bidirectional, self.step_rescale = disc, clip_eigs, bidirectional, step_rescale
        Lambda, V = hippo_normal(d_state, blocks)
        self.Lambda_re = nn.Parameter(Lambda.real.float())
        self.Lambda_im = nn.Parameter(Lambda.imag.float())
        self.B = nn.Parameter(_real_pairs(V.conj().T @ lecun_normal(d_state, d_model, fan_in=d_state).to(V.dtype)))
        directions = 2 if bidirectional else 1
        self.C = nn.Parameter(torch.stack([_real_pairs(init_output_matrix(c_init, d_model, V))
                                           for _ in range(directions)]))
        self.D = nn.Parameter(torch.randn(d_model))
        self.log_step = nn.Parameter(log_uniform_dt(d_state // 2, dt_min, dt_max).float())
        for p in (self.Lambda_re, self.Lambda_im, self.B):
            set_optim(p, lr=ssm_lr, weight_decay=0.0)
        set_optim(self.log_step, lr=ssm_lr if dt_lr is None else dt_lr, weight_decay=0.0)

    def _real_dtype(self, u: torch.Tensor) -> torch.dtype:
        """float64 for float64 input, else float32 (half-precision inputs are computed in float32)."""
        return torch.float64 if u.dtype == torch.float64 else torch.float32

    def lam(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Lambda (P/2,) complex of real precision `dtype`, Re clipped to <= -1e-4 when clip_eigs."""
        re = self.Lambda_re.to(dtype)
        return torch.complex(re.clamp(max=MAX_REAL) if self.clip_eigs else re, self.Lambda_im.to(dtype))

    def discretize(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ab (P/2,), Bb (P/2, H)) complex by zoh or bilinear with dt = step_rescale * exp(log_step)."""
        dt = self.step_rescale * torch.exp(self.log_step.to(dtype))
        B = torch.view_as_complex(self.B.to(dtype))
        # every state is its own system: Lambda_n (1,), its row of B~ (H,) and its dt_n
        Ab, Bb = DISCRETIZATIONS[self.disc](self.lam(dtype)[:, None], B, dt)
        return Ab[:, 0], Bb

    @staticmethod
    def drive(u: torch.Tensor, Bb: torch.Tensor) -> torch.Tensor:
        """Bb u: (..., H) real -> (..., P/2) complex, as one real matmul with the rows of Bb as (Re, Im) pairs."""
        W = torch.view_as_real(Bb).transpose(1, 2).reshape(-1, Bb.shape[1])
        return torch.view_as_complex(F.linear(u, W).unflatten(-1, (-1, 2)))

    def readout(self, x: torch.Tensor, direction: int) -> torch.Tensor:
        """2 Re(C~ x) with the output matrix of `direction` (0 forward, 1 reverse): (..., P/2) -> (..., H) real."""
        C = torch.view_as_complex(self.C[direction].to(x.real.dtype))
        W = 2 * torch.stack([C.real, -C.imag], dim=-1).reshape(C.shape[0], -1)
        return F.linear(torch.view_as_real(x).flatten(-2), W)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, H), in the input's dtype."""
        with torch.autocast(u.device.type, enabled=False):
            dtype = self._real_dtype(u)
            v = u.to(dtype)
            Ab, Bb = self.discretize(dtype)
            drive = self.drive(v, Bb)
            y = self.readout(linear_scan(Ab, drive), 0) + self.D.to(dtype) * v
            if self.bidirectional:
                y = y + self.readout(linear_scan(Ab, drive, reverse=True), 1)
            return y.to(u.dtype)

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """x_{-1} = 0: (B, P/2) complex (complex128 for dtype float64, else complex64)."""
        real = torch.float64 if dtype == torch.float64 else torch.float32
        return torch.zeros(batch_size, self.Lambda_re.shape[0], dtype=real.to_complex(),
                           device=device if device is not None else self.Lambda_re.device)

    def step(self, u_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the causal layer: u_t (B, H), state x_{t-1} (B, P/2) -> (y_t (B, H), x_t (B, P/2))."""
        if self.bidirectional:
            raise ValueError("s5: a bidirectional layer has no recurrent step; use bidirectional=false for step()")
        with torch.autocast(u_t.device.type, enabled=False):
            dtype = self._real_dtype(u_t)
            v = u_t.to(dtype)
            Ab, Bb = self.discretize(dtype)
            x = Ab * state.to(dtype.to_complex()) + self.drive(v, Bb)
            return (self.readout(x, 0) + self.D.to(dtype) * v).to(u_t.dtype), x


class S5Mixer(nn.Module):
    """The S5 block's branch (module docstring): (B, L, H) -> (B, L, H); recurrent via `step` when causal."""

    def __init__(self, d_model: int, d_state: int = 256, blocks: int = 8, c_init: str = "trunc_standard_normal",
                 disc: str = "zoh", dt_min: float = 1e-3, dt_max: float = 1e-1, clip_eigs: bool = False,
                 bidirectional: bool = False, step_rescale: float = 1.0, ssm_lr: float | None = 1e-3,
                 dt_lr: float | None = None, activation: str = "half_glu1", dropout: float = 0.0,
                 tie_dropout: bool = False):
        """Options: see the module docstring and `S5SSM`; ssm_lr's default is S5's ssm_lr_base (run_train.py)."""
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"s5: activation={activation!r} is not one of {list(ACTIVATIONS)}")
        self.ssm = S5SSM(d_model, d_state, blocks, c_init, disc, dt_min, dt_max, clip_eigs, bidirectional,
                         step_rescale, ssm_lr, dt_lr)
        self.causal = not bidirectional
        self.activation = activation
        self.drop = SequenceDropout(dropout, tie_dropout)
        widths = {"full_glu": 2 * d_model, "half_glu1": d_model, "half_glu2": d_model}
        self.out = nn.Linear(d_model, widths[activation]) if activation in widths else None
        if self.out is not None:
            with torch.no_grad():
                self.out.weight.copy_(lecun_normal(*self.out.weight.shape, fan_in=d_model))
                self.out.bias.zero_()

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        """The activation (module docstring), position-wise: (..., H) -> (..., H)."""
        if self.activation == "gelu":
            return F.gelu(y, approximate="tanh")
        z = self.drop(F.gelu(y, approximate="tanh"))
        if self.activation == "full_glu":
            return F.glu(self.out(z), dim=-1)
        if self.activation == "half_glu1":
            return z * torch.sigmoid(self.out(z))
        return y * torch.sigmoid(self.out(z))  # half_glu2

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, H)."""
        return self._post(self.ssm(u))

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """The S5 state x_{-1} = 0: (B, P/2) complex."""
        return self.ssm.initial_state(batch_size, device, dtype)

    def discrete_eigenvalues(self) -> torch.Tensor:
        """The discretized Lambda of the MIMO recurrence and its conjugates: (1, P) complex."""
        Ab = self.ssm.discretize(self.ssm._real_dtype(self.ssm.D))[0]
        return torch.cat([Ab, Ab.conj()])[None]

    def state_space(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The forward MIMO system with its conjugate half spelled out, y = 2 Re(C~ x) = [C~, conj C~] [x; conj x]
        (`ssmbench analyze`'s Gramians): lambda (1, P), B (1, P, H), C (1, H, P) complex."""
        Ab, Bb = self.ssm.discretize(self.ssm._real_dtype(self.ssm.D))
        C = torch.view_as_complex(self.ssm.C[0].to(Ab.real.dtype))
        return torch.cat([Ab, Ab.conj()])[None], torch.cat([Bb, Bb.conj()])[None], torch.cat([C, C.conj()], -1)[None]

    def step(self, u_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u_t (B, H), state (B, P/2) -> (y_t (B, H), state): equal to forward() one position at a time."""
        y, state = self.ssm.step(u_t, state)
        return self._post(y), state
