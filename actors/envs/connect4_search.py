"""A depth-limited alpha-beta Connect Four player: the yardstick the agents are measured against (and an
occasional training opponent). Depth d searches d plies (its move, the reply, ...) and scores the leaves with
the usual window heuristic; `noise` perturbs the root's non-decisive move scores so that games differ.

Boards are bitboards in plain Python ints (bit = column * 7 + row, row 0 at the bottom, one sentinel bit on
top of each column), the classic layout in which a four-in-a-row test is four shifts and ands: a depth-4
search takes a few milliseconds per move in pure Python, where a numpy board costs more per node than the
whole bitboard test.
"""
from __future__ import annotations

import numpy as np

ROWS, COLS = 6, 7
H1 = ROWS + 1
WIN = 1_000_000
CENTRE_ORDER = (3, 2, 4, 1, 5, 0, 6)   # moves searched centre first: better pruning


def _windows() -> list[int]:
    """Every line of four cells as a bit mask (69 of them)."""
    out = []
    for c in range(COLS):
        for r in range(ROWS):
            for dc, dr in ((1, 0), (0, 1), (1, 1), (1, -1)):
                cells = [(c + i * dc, r + i * dr) for i in range(4)]
                if all(0 <= cc < COLS and 0 <= rr < ROWS for cc, rr in cells):
                    out.append(sum(1 << (cc * H1 + rr) for cc, rr in cells))
    return out


WINDOWS = _windows()
CENTRE_MASK = sum(1 << (3 * H1 + r) for r in range(ROWS))


def has_four(b: int) -> bool:
    for shift in (1, H1, H1 - 1, H1 + 1):   # vertical, horizontal, two diagonals
        m = b & (b >> shift)
        if m & (m >> 2 * shift):
            return True
    return False


def from_observation(obs: np.ndarray) -> tuple[int, int, list[int]]:
    """(mine, theirs, heights) from the (6, 7, 2) planes (row 0 on top; plane 0 = the player to move)."""
    planes = np.asarray(obs).reshape(ROWS, COLS, 2) > 0.5
    mine = theirs = 0
    heights = []
    for c in range(COLS):
        h = 0
        for r in range(ROWS):   # r counted from the bottom
            bit = 1 << (c * H1 + r)
            if planes[ROWS - 1 - r, c, 0]:
                mine |= bit
                h = r + 1
            elif planes[ROWS - 1 - r, c, 1]:
                theirs |= bit
                h = r + 1
        heights.append(h)
    return mine, theirs, heights


def heuristic(mine: int, theirs: int) -> int:
    """Open windows: three of mine +5, two +2, my centre discs +3 each; the same for theirs, subtracted."""
    score = 3 * (bin(mine & CENTRE_MASK).count("1") - bin(theirs & CENTRE_MASK).count("1"))
    for w in WINDOWS:
        a, b = w & mine, w & theirs
        if a and not b:
            n = bin(a).count("1")
            score += 5 if n == 3 else 2 if n == 2 else 0
        elif b and not a:
            n = bin(b).count("1")
            score -= 5 if n == 3 else 2 if n == 2 else 0
    return score


def negamax(mine: int, theirs: int, heights: list[int], depth: int, alpha: int, beta: int) -> int:
    """Value for the player to move (`mine`); wins sooner score higher."""
    moves = [c for c in CENTRE_ORDER if heights[c] < ROWS]
    if not moves:
        return 0
    for c in moves:   # a win now ends the search at this node
        if has_four(mine | (1 << (c * H1 + heights[c]))):
            return WIN + depth
    if depth <= 1:
        return heuristic(mine, theirs)
    best = -WIN * 2
    for c in moves:
        bit = 1 << (c * H1 + heights[c])
        heights[c] += 1
        v = -negamax(theirs, mine | bit, heights, depth - 1, -beta, -alpha)
        heights[c] -= 1
        if v > best:
            best = v
        if best > alpha:
            alpha = best
        if alpha >= beta:
            break
    return best


def root_scores(mine: int, theirs: int, heights: list[int], depth: int) -> dict[int, int]:
    """Each legal column's value after searching `depth` plies in all (this move included)."""
    scores = {}
    for c in CENTRE_ORDER:
        if heights[c] >= ROWS:
            continue
        bit = 1 << (c * H1 + heights[c])
        if has_four(mine | bit):
            scores[c] = WIN + depth
            continue
        if depth <= 1:
            scores[c] = heuristic(mine | bit, theirs)
            continue
        heights[c] += 1
        scores[c] = -negamax(theirs, mine | bit, heights, depth - 1, -WIN * 2, WIN * 2)
        heights[c] -= 1
    return scores


class SearchPlayer:
    """`SearchPlayer(depth, noise)(obs, legal, rng) -> column`: alpha-beta to `depth` plies; among the
    non-decisive moves, Gaussian noise of sd `noise` (in heuristic points: an open three is 5) is added to
    each root score before the best is taken, so that games differ without throwing wins or missing blocks."""

    def __init__(self, depth: int = 2, noise: float = 1.0):
        if depth < 1:
            raise ValueError(f"search player: depth={depth!r} must be >= 1")
        if noise < 0:
            raise ValueError(f"search player: noise={noise!r} must be >= 0")
        self.depth, self.noise = int(depth), float(noise)

    def __call__(self, obs: np.ndarray, legal: np.ndarray, rng: np.random.Generator) -> int:
        mine, theirs, heights = from_observation(obs)
        scores = root_scores(mine, theirs, heights, self.depth)
        cols = [c for c in scores if legal[c]]
        if not cols:
            raise ValueError(f"search player: no legal column in {np.flatnonzero(legal).tolist()}")
        noisy = {c: scores[c] + (rng.normal(0.0, self.noise) if self.noise and abs(scores[c]) < WIN // 2 else 0.0)
                 for c in cols}
        best = max(noisy.values())
        return int(rng.choice([c for c in cols if noisy[c] == best]))

    def __repr__(self) -> str:
        return f"SearchPlayer(depth={self.depth}, noise={self.noise})"
