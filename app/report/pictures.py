"""Pictures of observations for the report: a gates state, a Connect Four board, an image observation (when the
env gave no rendered frame), and the mask's saliency as a heatmap over an image or a board."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from magicmask.report.figures import new_figure, norm01

C4_SIZE = 84   # Connect Four's observation: (6, 7, 2) planes, the mover's discs and the other's


def displayable(obs: np.ndarray) -> np.ndarray:
    """An image observation as something imshow draws, scaled to 0..1: (C, H, W) or (H, W, C); 3 channels
    as RGB, otherwise (stacked grey frames) the last channel; more dimensions: the first 2-D slice."""
    x = np.asarray(obs, float)
    if x.ndim == 3:
        ch_last = x.shape[-1] <= 4 and x.shape[0] > 4
        x = x if ch_last else np.moveaxis(x, 0, -1)
        x = x if x.shape[-1] == 3 else x[..., -1]
    elif x.ndim > 3:
        x = x.reshape(x.shape[0], x.shape[1], -1)[..., 0]
    return norm01(x)


def connect4_board(obs: np.ndarray) -> np.ndarray:
    """A Connect Four observation as a 6 x 7 RGB board: red the mover's discs, yellow the other's."""
    planes = np.asarray(obs, float).reshape(6, 7, 2)
    board = np.full((6, 7, 3), [0.12, 0.3, 0.75])
    board[planes[..., 0] > 0] = [0.85, 0.15, 0.15]
    board[planes[..., 1] > 0] = [0.95, 0.85, 0.15]
    return board


def gates_state(state: dict, layout) -> Figure | None:
    """A labelled drawing of one gates state from its observation: the episode's cells, the current step, the
    cue (the correct action) and the action the agent took. `layout`: (length, n_actions, noise, shared gates,
    private gate); None when the observation does not fit it."""
    obs = np.asarray(state.get("observation") or [], float)
    if layout is None or obs.ndim != 1:
        return None
    L, A, noise, shared, private = layout
    if len(obs) != L + A + noise:
        return None
    pos = int(np.argmax(obs[:L])) if obs[:L].max() > 0 else int(state.get("step", 0))
    cue = int(np.argmax(obs[L:L + A])) if obs[L:L + A].max() > 0 else None
    fig = new_figure(max(3.2, 0.24 * L + 0.4), 1.05)
    ax = fig.subplots()
    for s in range(L):
        colour = "#e6961e" if s in shared else "#3c78e6" if s == private else "#c8c8c8"
        ax.add_patch(Rectangle((s + 0.06, 0.06), 0.88, 0.88, color=colour, alpha=0.45 if s < pos else 1.0))
    ax.add_patch(Rectangle((pos + 0.02, 0.02), 0.96, 0.96, fill=False, ec="#d21e1e", lw=2.2))
    ax.plot([pos + 0.5], [-0.25], marker="^", color="#d21e1e", ms=7, clip_on=False)
    ax.set_xlim(0, L)
    ax.set_ylim(-0.45, 1.0)
    ax.set_xticks([s + 0.5 for s in range(L)], [str(s) for s in range(L)], fontsize=6)
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(False)
    act = state.get("action")
    text = f"step {pos}: " + (f"gate, cue = action {cue}" if cue is not None else "no gate (no cue)")
    if act is not None:
        text += f"; took action {act}" + ("" if cue is None else (" ✓" if int(act) == cue else " ✗"))
    ax.set_title(text, fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.8, bottom=0.2)
    return fig


def observation(state: dict, env_name: str) -> Figure | None:
    """A picture of an observation when the env gave no frame: a board (connect4), an image, or bars."""
    obs = np.asarray(state.get("observation") or [], float)
    if obs.size == 0:
        return None
    fig = new_figure(3.0, 2.4)
    ax = fig.subplots()
    if env_name == "connect4" and obs.size == C4_SIZE:
        ax.imshow(connect4_board(obs), interpolation="nearest")
        ax.set_title("red: the agent, yellow: opponent", fontsize=7)
        ax.set_xticks(range(7))
        ax.set_yticks([])
    elif obs.ndim >= 2:
        img = displayable(obs)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.axis("off")
    else:
        ax.bar(np.arange(obs.size), obs, color="#555")
        ax.set_xlabel("feature", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def _heat(g: np.ndarray) -> np.ndarray:
    """Saliency of an image observation summed over its channels: (H, W)."""
    if g.ndim == 3:   # channels first (C, H, W) unless the last axis is the small one (H, W, C)
        return g.sum(-1) if g.shape[-1] <= 4 and g.shape[0] > 4 else g.sum(0)
    if g.ndim > 3:
        return g.reshape(g.shape[0], g.shape[1], -1).sum(-1)
    return g


def saliency_heatmap(agent: int, g: np.ndarray, obs: np.ndarray, m: np.ndarray, env_name: str) -> Figure:
    """Mean |dm/dobs| as a heatmap beside the observation of the agent's highest-m step (over it for images;
    for a Connect Four board alone, with that state's discs as rings)."""
    top = int(np.argmax(m))
    board = env_name == "connect4" and g.size == C4_SIZE
    fig = new_figure(7.0, 3.0)
    ax1, ax2 = fig.subplots(1, 2)
    if board:
        planes = obs[top].reshape(6, 7, 2)
        ax1.imshow(connect4_board(obs[top]), interpolation="nearest")
        ax1.set_title(f"highest-m state (m={m[top]:.2f}); red: the mover", fontsize=8)
        im = ax2.imshow(g.reshape(6, 7, 2).sum(-1), cmap="inferno", interpolation="nearest")
        for plane, ring in ((0, "#e03030"), (1, "#f2d21a")):
            rr, cc = np.nonzero(planes[..., plane] > 0)
            ax2.scatter(cc, rr, s=110, facecolors="none", edgecolors=ring, linewidths=1.8)
    else:
        base = displayable(obs[top])
        cmap = "gray" if base.ndim == 2 else None
        ax1.imshow(base, cmap=cmap, interpolation="nearest")
        ax1.set_title(f"observation at the highest-m step (m={m[top]:.2f})", fontsize=8)
        ax2.imshow(base, cmap=cmap, interpolation="nearest")
        im = ax2.imshow(_heat(g), cmap="inferno", alpha=0.6, interpolation="nearest")
    fig.colorbar(im, ax=ax2, fraction=0.046).ax.tick_params(labelsize=6)
    ax2.set_title("mean |dm/dobs| over the frame", fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"agent {agent}", fontsize=9)
    fig.tight_layout()
    return fig
