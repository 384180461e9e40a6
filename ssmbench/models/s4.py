"""S4 and S4D layers (Gu, Goel, Re 2022; Gu et al. 2022): H independent state-space models, one per
channel, applied as a long convolution, followed by a GELU and a GLU output projection.

    u: (B, L, H) -> per channel h:  y_h = K_h * u_h + D_h u_h          (SSM convolution + skip)
                 -> z = dropout(gelu(y)) -> out = GLU(W z + b)          (W: H -> 2H)
(the placement of the S4 release's v3 layer; `tie_dropout`: one mask for all time steps). glu=False
gives the ungated layer, out = W z + b with W: H -> H (the Mamba paper's "no gate" S4 architecture).

Each channel's continuous system x' = A x + B u, y = C x (state size N = d_state, stored as the
N/2 eigenvalues of one conjugate half; the other half is their complex conjugate, so K is real):
    mode "dplr" (S4):  A = diag(Lambda) - P P^*, bilinear discretization, C~ = C (I - Ab^l_max)
                       trained in place of C, kernel by `core.ssm_kernel.kernel_dplr`
    mode "diag" (S4D): A = diag(Lambda), zoh (default) or bilinear, kernel by `kernel_diag`
Initializations (`init`): legs, legt, fout (HiPPO through `core.hippo.dplr`; for mode "diag" the
low-rank term is dropped: S4D-LegS, ...), lin (Lambda_n = -1/2 + i pi n) and inv
(Lambda_n = -1/2 + i N/pi (N/(2n+1) - 1)), the last two with B = 1 and for mode "diag" only.
Re(Lambda) = -exp(log_neg_real) < 0 keeps every system stable (legt and fout, whose normal parts
have Re(Lambda) = 0, start at -1e-4). dt is per channel, log-uniform in [dt_min, dt_max] at init, and
trained through `dt_transform`: exp (dt = exp(log_dt), the S4 paper and the release's v3 configs) or
softplus (dt = softplus(softplus_inv_dt), the release's later default).

Sharing (`n_ssm`, the S4 release's name): the H channels use n_ssm distinct systems (Lambda, P, B),
channel h the system h mod n_ssm (n_ssm must divide H; None: n_ssm = H, one system per channel).
dt, C and D stay per channel, so the channels of a group still have different kernels.
Mode "dplr" computes the kernel at its length l_max (C~ depends on it): shorter inputs use its first
L entries, longer inputs are an error.

Complex parameters (B, P, C) are stored as real (..., 2) pairs (`torch.view_as_real` layout) and
viewed as complex tensors for every computation: `Module.to(dtype)` (and Lightning's "16-true" /
"bf16-true" precision) would otherwise cast a complex parameter to a real one and silently drop its
imaginary part. The SSM is computed in float64 when the parameters are float64, else in float32.

Optimization (`ssmbench.models.params.set_optim`): Lambda (log_neg_real, imag), B and P get their own
learning rate `ssm_lr`, the dt parameter `dt_lr` (None: ssm_lr; the release's LRA configs train dt
with the base lr: dt_lr = optimizer.lr), all of them without weight decay; C, D and the output
projection use the optimizer's base learning rate and weight decay.

bidirectional=True: two kernels per channel (C has two rows), combined by
`core.fftconv.bidirectional_conv` (y_t = sum_{s<=t} K0_{t-s} u_s + sum_{s>t} K1_{s-t-1} u_s);
the layer is then not causal and has no `step()`.

Recurrent inference (causal layer): `initial_state` / `step` run x_k = Ab x_{k-1} + Bb u_k,
y_k = C x_k + D u_k with the same outputs as the convolution. For "dplr" the step uses the full
N-dimensional state (both conjugate halves, since P P^* couples them) and the Woodbury form of `core.discretize.bilinear_dplr` (O(N) per step); C is
recovered from C~ once (a dense solve, cached until the parameters change). With gradients off
(validation, test, generation) the convolution kernel is cached the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.core.discretize import bilinear_diag, bilinear_dplr, dplr_matvec, zoh_diag
from ssmbench.core.hippo import MEASURES, dplr
from ssmbench.core.ssm_kernel import c_from_ct, kernel_diag, kernel_dplr
from ssmbench.models.dropout import SequenceDropout
from ssmbench.models.kernel_conv import KernelConvLayer
from ssmbench.models.params import set_optim
from ssmbench.models.step_size import inverse_softplus, log_uniform_dt

MODES = ("dplr", "diag")
INITS = (*MEASURES, "lin", "inv")
DT_PARAMETERS = {"exp": "log_dt", "softplus": "softplus_inv_dt"}  # dt_transform -> the parameter that holds dt
MIN_NEG_REAL = 1e-4


def dt_parameter(log_dt: torch.Tensor, transform: str) -> torch.Tensor:
    """The parameter value that `transform` maps to dt = exp(log_dt): log_dt itself (exp) or the inverse
    softplus of dt (softplus)."""
    return log_dt if transform == "exp" else inverse_softplus(torch.exp(log_dt))


def diagonal_init(init: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Lambda (N/2,), B (N/2,)) complex128: one conjugate half of the initial diagonal system of size N."""
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "lin":
        return torch.complex(torch.full_like(n, -0.5), math.pi * n), torch.ones(N // 2, dtype=torch.complex128)
    if init == "inv":
        imag = N / math.pi * (N / (2 * n + 1) - 1)
        return torch.complex(torch.full_like(n, -0.5), imag), torch.ones(N // 2, dtype=torch.complex128)
    Lambda, _, B, _ = dplr(init, N)
    return Lambda, B


def _real_pairs(z: torch.Tensor) -> torch.Tensor:
    """A complex tensor (...) as a float32 tensor (..., 2) of real and imaginary parts."""
    return torch.view_as_real(z.to(torch.complex64)).clone()


def _check_options(d_model: int, d_state: int, mode: str, init: str, l_max: int | None, disc: str | None,
                   dt_min: float, dt_max: float, dt_transform: str, n_ssm: int | None) -> str:
    """ValueError naming the first of S4Mixer's options that is out of range or does not fit the others;
    returns the discretization (`disc`, or the mode's own: bilinear for dplr, zoh for diag)."""
    if dt_transform not in DT_PARAMETERS:
        raise ValueError(f"s4: dt_transform={dt_transform!r} is not one of {list(DT_PARAMETERS)}")
    if n_ssm is not None and not (1 <= n_ssm <= d_model and d_model % n_ssm == 0):
        raise ValueError(f"s4: n_ssm={n_ssm} must divide d_model={d_model} (1 ... d_model systems shared by the channels)")
    if mode not in MODES:
        raise ValueError(f"s4: mode={mode!r} is not one of {list(MODES)}")
    if init not in INITS:
        raise ValueError(f"s4: init={init!r} is not one of {list(INITS)}")
    if d_state < 2 or d_state % 2:
        raise ValueError(f"s4: d_state={d_state} must be a positive even number (N/2 conjugate pairs)")
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"s4: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    disc = disc or ("bilinear" if mode == "dplr" else "zoh")
    if disc not in ("zoh", "bilinear"):
        raise ValueError(f"s4: disc={disc!r} is not one of ['zoh', 'bilinear']")
    if mode == "dplr":
        if disc != "bilinear":
            raise ValueError("s4: mode=dplr uses the bilinear discretization; disc=zoh is for mode=diag (S4D)")
        if init not in MEASURES:
            raise ValueError(f"s4: init={init} has no low-rank term; use mode=diag or init in {list(MEASURES)}")
        if l_max is None or l_max < 1:
            raise ValueError("s4: mode=dplr needs l_max (the longest input length, e.g. ${task.seq_len})")
    return disc


class S4Mixer(KernelConvLayer, nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        mode: str = "dplr",
        init: str = "legs",
        l_max: int | None = None,
        disc: str | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_transform: str = "exp",
        n_ssm: int | None = None,
        ssm_lr: float = 1e-3,
        dt_lr: float | None = None,
        bidirectional: bool = False,
        dropout: float = 0.0,
        tie_dropout: bool = False,
        glu: bool = True,
    ):
        super().__init__()
        disc = _check_options(d_model, d_state, mode, init, l_max, disc, dt_min, dt_max, dt_transform, n_ssm)
        H, N2 = d_model, d_state // 2
        S = H if n_ssm is None else n_ssm
        self.d_model, self.d_state, self.mode, self.disc = d_model, d_state, mode, disc
        self.l_max, self.bidirectional, self.n_ssm, self.dt_transform = l_max, bidirectional, S, dt_transform
        self.causal = not bidirectional
        channels = 2 if bidirectional else 1

        if mode == "dplr":
            Lambda, P, B, _ = dplr(init, d_state)
            self.P_ri = self._ssm(_real_pairs(P.expand(S, -1, -1)), ssm_lr)
        else:
            Lambda, B = diagonal_init(init, d_state)
        neg_real = (-Lambda.real).clamp(min=MIN_NEG_REAL)
        self.log_neg_real = self._ssm(torch.log(neg_real).float().expand(S, N2).clone(), ssm_lr)
        self.imag = self._ssm(Lambda.imag.float().expand(S, N2).clone(), ssm_lr)
        self.B_ri = self._ssm(_real_pairs(B.expand(S, N2)), ssm_lr)
        log_dt = log_uniform_dt(H, dt_min, dt_max, dtype=torch.float32)
        dt = self._ssm(dt_parameter(log_dt, dt_transform), ssm_lr if dt_lr is None else dt_lr)
        self.register_parameter(DT_PARAMETERS[dt_transform], dt)
        self.C_ri = nn.Parameter(_real_pairs(torch.randn(channels, H, N2, dtype=torch.complex64)))
        self.D = nn.Parameter(torch.randn(H))
        self.dropout = SequenceDropout(dropout, tie_dropout)
        self.glu = glu
        self.output = nn.Linear(H, 2 * H if glu else H)
        self._cache: dict[str, tuple] = {}

    @staticmethod
    def _ssm(value: torch.Tensor, lr: float) -> nn.Parameter:
        return set_optim(nn.Parameter(value), lr=lr, weight_decay=0.0)

    def _real_dtype(self) -> torch.dtype:
        return torch.float64 if self.D.dtype == torch.float64 else torch.float32

    def _complex(self, pairs: torch.Tensor) -> torch.Tensor:
        return torch.view_as_complex(pairs.to(self._real_dtype()))

    def _per_channel(self, t: torch.Tensor) -> torch.Tensor:
        """(n_ssm, ...) -> (H, ...): channel h takes system h mod n_ssm."""
        return t if self.n_ssm == self.d_model else t.repeat(self.d_model // self.n_ssm, *(1,) * (t.dim() - 1))

    @property
    def B(self) -> torch.Tensor:
        """(H, N/2) complex."""
        return self._per_channel(self._complex(self.B_ri))

    @property
    def P(self) -> torch.Tensor:
        """(H, r, N/2) complex (mode dplr)."""
        return self._per_channel(self._complex(self.P_ri))

    @property
    def C(self) -> torch.Tensor:
        """(channels, H, N/2) complex: C~ for mode dplr, C for mode diag."""
        return self._complex(self.C_ri)

    def eigenvalues(self) -> torch.Tensor:
        """Lambda = -exp(log_neg_real) + i imag: (H, N/2) complex, Re < 0."""
        dtype = self._real_dtype()
        return self._per_channel(torch.complex(-torch.exp(self.log_neg_real.to(dtype)), self.imag.to(dtype)))

    def dt(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The step sizes (H,) > 0: exp(log_dt) or softplus(softplus_inv_dt), in `dtype` (default: the SSM's)."""
        raw = getattr(self, DT_PARAMETERS[self.dt_transform]).to(dtype or self._real_dtype())
        return torch.exp(raw) if self.dt_transform == "exp" else F.softplus(raw)

    def ssm_kernel(self, L: int) -> torch.Tensor:
        """The real convolution kernels (channels, H, L), channels = 2 when bidirectional else 1."""
        Lambda, dt = self.eigenvalues(), self.dt()
        if self.mode == "diag":
            return 2 * kernel_diag(Lambda, self.B, self.C, dt, L, method=self.disc).real
        if L > self.l_max:
            raise ValueError(
                f"s4: input length {L} exceeds l_max={self.l_max}; set model.mixer.l_max to the longest sequence"
            )
        return kernel_dplr(Lambda, self.P, self.P, self.B, self.C, dt, self.l_max, conj_sym=True)[..., :L]

    def discrete_eigenvalues(self) -> torch.Tensor:
        """The eigenvalues of the discretized state matrix of each channel's system: (H, N) complex
        (mode diag: Ab and its conjugate half; mode dplr: eigenvalues of the bilinear Ab, in complex128)."""
        rec = self._recurrence()
        if self.mode == "diag":
            return torch.cat([rec["Ab"], rec["Ab"].conj()], dim=-1)
        eye = torch.eye(self.d_state, dtype=rec["Bb"].dtype, device=self.D.device)
        Ab = dplr_matvec(rec["A1"], dplr_matvec(rec["A0"], eye[:, None, :])).permute(1, 2, 0)
        return torch.linalg.eigvals(Ab.to(torch.complex128))

    def state_space(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Mode diag: each channel's (causal) system with its conjugate half spelled out, y = 2 Re(C x) =
        [C, conj C] [x; conj x] (`ssmbench analyze`'s Gramians): lambda (H, N), B (H, N, 1), C (H, 1, N)
        complex. None for mode dplr, whose state matrix is not diagonal."""
        if self.mode != "diag":
            return None
        rec = self._recurrence()
        full = lambda t: torch.cat([t, t.conj()], dim=-1)  # noqa: E731
        return full(rec["Ab"]), full(rec["Bb"])[..., None], full(rec["C"] / 2)[:, None, :]


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, H) by convolution with the SSM kernel."""
        L = x.shape[1]
        return self.convolve(x, self._cached("kernel", lambda: self.ssm_kernel(L), L))

    def _recurrence(self) -> dict:
        """The discrete recurrence (computed in complex128, cast to the parameters' dtype):
        dplr: Woodbury factors A0, A1 of the full N-state system, Bb, C (from C~); diag: Ab, Bb, C."""
        cdtype = self.B.dtype
        Lambda = self.eigenvalues().to(torch.complex128)
        B, C = self.B.to(torch.complex128), self.C[0].to(torch.complex128)
        dt = self.dt(torch.float64)
        if self.mode == "diag":
            Ab, Bb = (zoh_diag if self.disc == "zoh" else bilinear_diag)(Lambda, B, dt)
            return {"Ab": Ab.to(cdtype), "Bb": Bb.to(cdtype), "C": 2 * C.to(cdtype)}
        P = self.P.to(torch.complex128)
        full = [torch.cat([t, t.conj()], dim=-1) for t in (Lambda, P, B, C)]
        Lambda, P, B, Ct = full
        A0, A1, Bb = bilinear_dplr(Lambda, P, P, B, dt)
        eye = torch.eye(Lambda.shape[-1], dtype=Lambda.dtype, device=Lambda.device)
        Ab = dplr_matvec(A1, dplr_matvec(A0, eye[:, None, :])).permute(1, 2, 0)   # (H, N, N), column j = Ab e_j
        C = c_from_ct(Ct, Ab, self.l_max)
        cast = lambda M: tuple(t.to(cdtype) for t in M)  # noqa: E731
        return {"A0": cast(A0), "A1": cast(A1), "Bb": Bb.to(cdtype), "C": C.to(cdtype)}

    def _cached(self, name: str, compute, *extra):
        """compute(), kept under `name` while the parameters (and `extra`) are unchanged and gradients
        are off. With gradients on, the parameters are about to change: the cache is dropped."""
        if torch.is_grad_enabled():
            self._cache.clear()
            return compute()
        key = (*extra, *((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters()))
        hit = self._cache.get(name)
        if hit is None or hit[0] != key:
            hit = self._cache[name] = (key, compute())
        return hit[1]

    def recurrence(self) -> dict:
        """`_recurrence()`, cached while the parameters are unchanged (and gradients are off)."""
        return self._cached("recurrence", self._recurrence)

    def _require_causal(self) -> None:
        if self.bidirectional:
            raise ValueError("s4: a bidirectional layer has no recurrent step; use bidirectional=false for step()")

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """x_0 = 0: (B, H, N) complex for mode dplr (full state), (B, H, N/2) for mode diag (one half)."""
        self._require_causal()
        size = self.d_state if self.mode == "dplr" else self.d_state // 2
        cdtype = self.B.dtype if dtype is None else torch.promote_types(dtype, torch.complex64)
        return torch.zeros(batch_size, self.d_model, size, dtype=cdtype, device=device or self.B_ri.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x_t (B, H), state (B, H, N or N/2) -> (y_t (B, H), state)."""
        self._require_causal()
        rec = self.recurrence()
        u = x_t.to(rec["Bb"].real.dtype)
        if self.mode == "diag":
            state = rec["Ab"] * state + rec["Bb"] * u[..., None]
        else:
            state = dplr_matvec(rec["A1"], dplr_matvec(rec["A0"], state)) + rec["Bb"] * u[..., None]
        y = (rec["C"] * state).sum(-1).real + self.D.to(u.dtype) * u
        return self._head(y.to(x_t.dtype)), state
