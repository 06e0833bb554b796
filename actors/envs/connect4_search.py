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


def _window_starts() -> dict[int, int]:
    """Per direction (the bit shift between a line's cells), the bits where a line of four on the board starts:
    69 lines in all. A line starting at bit p covers p, p + s, p + 2s, p + 3s."""
    starts = {}
    for dc, dr in ((0, 1), (1, 0), (1, 1), (1, -1)):
        shift = dc * H1 + dr
        starts[shift] = sum(1 << (c * H1 + r) for c in range(COLS) for r in range(ROWS)
                            if 0 <= c + 3 * dc < COLS and 0 <= r + 3 * dr < ROWS)
    return starts


WINDOW_STARTS = _window_starts()
CENTRE_MASK = sum(1 << (3 * H1 + r) for r in range(ROWS))
CELL_BITS = np.array([c * H1 + (ROWS - 1 - r) for r in range(ROWS) for c in range(COLS)], np.int64)  # cell r*7+c's bit
OBS_BITS = np.int64(1) << CELL_BITS


def has_four(b: int) -> bool:
    for shift in (1, H1, H1 - 1, H1 + 1):   # vertical, horizontal, two diagonals
        m = b & (b >> shift)
        if m & (m >> 2 * shift):
            return True
    return False


def from_observation(obs: np.ndarray) -> tuple[int, int, list[int]]:
    """(mine, theirs, heights) from the (6, 7, C) planes (row 0 on top; plane 0 = the player to move, plane 1 the
    other; further planes, the env's `features`, are derived from these two and ignored here)."""
    planes = np.asarray(obs).reshape(ROWS * COLS, -1)[:, :2] > 0.5
    mine, theirs = (int(OBS_BITS @ planes[:, k]) for k in (0, 1))
    heights = (planes[:, 0] | planes[:, 1]).reshape(ROWS, COLS).sum(0).tolist()   # pieces rest on each other
    return mine, theirs, heights


def _twos_and_threes(pieces: int, blocked: int) -> tuple[int, int]:
    """How many lines of four hold exactly two / three of `pieces` and none of `blocked`. Bit-parallel over all
    start cells of a direction at once: the four cells of every line are added as bit-sliced counters (a half
    adder per pair, then the pairs' sum), about 25 integer operations per direction instead of a loop over the
    69 lines (the search's leaves spend most of their time here)."""
    twos = threes = 0
    for s, starts in WINDOW_STARTS.items():
        a, b, c, d = pieces, pieces >> s, pieces >> 2 * s, pieces >> 3 * s
        open_ = starts & ~(blocked | blocked >> s | blocked >> 2 * s | blocked >> 3 * s)
        s1, c1 = a ^ b, a & b            # a + b = s1 + 2 c1
        s2, c2 = c ^ d, c & d            # c + d = s2 + 2 c2
        ones, carry = s1 ^ s2, s1 & s2   # a + b + c + d = ones + 2 (carry + c1 + c2)
        pairs = carry ^ c1 ^ c2          # the 2s bit of the count
        fours = (carry & c1) | (carry & c2) | (c1 & c2)
        twos += (open_ & pairs & ~ones & ~fours).bit_count()
        threes += (open_ & pairs & ones).bit_count()
    return twos, threes


def heuristic(mine: int, theirs: int) -> int:
    """Open windows: three of mine +5, two +2, my centre discs +3 each; the same for theirs, subtracted."""
    score = 3 * ((mine & CENTRE_MASK).bit_count() - (theirs & CENTRE_MASK).bit_count())
    my_twos, my_threes = _twos_and_threes(mine, theirs)
    their_twos, their_threes = _twos_and_threes(theirs, mine)
    return score + 5 * (my_threes - their_threes) + 2 * (my_twos - their_twos)


def negamax(mine: int, theirs: int, heights: list[int], depth: int, alpha: int, beta: int) -> int:
    """Value for the player to move (`mine`); wins sooner score higher. Two plies from the leaves the exact value
    comes from `depth2_scores` (the last two plies without a search: most of a depth-4 search's nodes)."""
    moves = [c for c in CENTRE_ORDER if heights[c] < ROWS]
    if not moves:
        return 0
    if depth == 2:
        return max(depth2_scores(mine, theirs, heights).values())
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


def winning_cells(pieces: int) -> int:
    """The cells (bits, empty or not) where one more of `pieces` would complete a line of four: for each
    direction, the three ways a cell can be the end or an inner cell of a line (the classic bitboard threat
    map; the sentinel row and the columns beyond the board are masked off)."""
    threats = (pieces << 1) & (pieces << 2) & (pieces << 3)   # on top of three of its own
    for s in (H1, H1 - 1, H1 + 1):
        pair = (pieces << s) & (pieces << 2 * s)
        threats |= pair & ((pieces << 3 * s) | (pieces >> s))
        pair = (pieces >> s) & (pieces >> 2 * s)
        threats |= pair & ((pieces << s) | (pieces >> 3 * s))
    return threats & BOARD_MASK


def _cell_lines() -> list[tuple[int, ...]]:
    """The lines of four through each cell, as bit masks, indexed by the cell's bit."""
    lines: list[list[int]] = [[] for _ in range(COLS * H1)]
    for s, starts in WINDOW_STARTS.items():
        for p in range(COLS * H1):
            if starts >> p & 1:
                line = sum(1 << (p + i * s) for i in range(4))
                for i in range(4):
                    lines[p + i * s].append(line)
    return [tuple(ls) for ls in lines]


CELL_LINE_MASKS = _cell_lines()
BOARD_MASK = sum(1 << (c * H1 + r) for c in range(COLS) for r in range(ROWS))
BOTTOM_ROW = sum(1 << (c * H1) for c in range(COLS))
LINE_POINTS = (0, 0, 2, 5, 0)   # a line's points in the heuristic by its count of one side's discs


def heuristic_gain(mine: int, theirs: int, cell: int) -> int:
    """heuristic(mine | cell, theirs) - heuristic(mine, theirs): only the lines through the new disc change.
    On them my count grows by one, and a line of theirs that held none of mine stops counting for them."""
    gain = 3 if cell & CENTRE_MASK else 0
    for line in CELL_LINE_MASKS[cell.bit_length() - 1]:
        a, b = (line & mine).bit_count(), line & theirs
        if not b:
            gain += LINE_POINTS[a + 1] - LINE_POINTS[a]
        elif not a:
            gain += LINE_POINTS[b.bit_count()]
    return gain


def depth2_scores(mine: int, theirs: int, heights: list[int]) -> dict[int, int]:
    """`root_scores(..., depth=2)` without the search (tests compare the two on every position of random
    games), for the player the default job trains and evaluates against most. After my move in column c: I win
    now (WIN + 2); else the opponent wins with a reply (-(WIN + 1)): their landing cells are the other columns'
    and the one above mine, and my disc blocks none of their threats, since it is not on a landing cell of
    theirs; else the board is full (0); else the heuristic of the new board, as the heuristic before plus the
    gain of my disc."""
    base = heuristic(mine, theirs)
    mine_wins, their_wins = winning_cells(mine), winning_cells(theirs)
    landing = {c: 1 << (c * H1 + heights[c]) for c in CENTRE_ORDER if heights[c] < ROWS}
    all_landing = sum(landing.values())
    scores = {}
    for c, cell in landing.items():
        replies = (all_landing ^ cell) | (cell << 1 if heights[c] + 1 < ROWS else 0)
        if cell & mine_wins:
            scores[c] = WIN + 2
        elif replies & their_wins:
            scores[c] = -(WIN + 1)
        elif not replies:
            scores[c] = 0
        else:
            scores[c] = base + heuristic_gain(mine, theirs, cell)
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
        board = from_observation(obs)
        scores = depth2_scores(*board) if self.depth == 2 else root_scores(*board, self.depth)
        cols = [c for c in scores if legal[c]]
        if not cols:
            raise ValueError(f"search player: no legal column in {np.flatnonzero(legal).tolist()}")
        noisy = np.array([scores[c] for c in cols], np.float64)
        if self.noise:
            undecided = np.abs(noisy) < WIN // 2
            noisy[undecided] += rng.normal(0.0, self.noise, int(undecided.sum()))
        best = np.flatnonzero(noisy == noisy.max())
        return cols[int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])]

    def __repr__(self) -> str:
        return f"SearchPlayer(depth={self.depth}, noise={self.noise})"
