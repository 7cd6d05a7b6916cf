"""The board on which HTTP workers share out connections, and how long a busy worker
defers to a less busy one."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.http_workers import HOLD_MAX, HOLD_PER_CONNECTION, STALE_AFTER, Board, hold_for


def _write_slot(path: Path, index: int, pid: int, connections: int, written: float) -> None:
    """Another worker's slot, as that worker would write it."""
    data = bytearray(path.read_bytes())
    Board._SLOT.pack_into(data, index * Board._SLOT.size, pid, connections, written)
    path.write_bytes(bytes(data))


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Board]:
    b = Board(tmp_path / "workers.board", 3)
    yield b
    b.close()


def test_a_worker_that_holds_no_more_than_the_others_accepts_at_once() -> None:
    assert hold_for(0, None) == 0.0  # alone
    assert hold_for(3, 3) == 0.0
    assert hold_for(2, 5) == 0.0


def test_a_busier_worker_waits_longer_the_busier_it_is_up_to_a_limit() -> None:
    assert hold_for(4, 3) == pytest.approx(HOLD_PER_CONNECTION)
    assert hold_for(6, 3) == pytest.approx(3 * HOLD_PER_CONNECTION)
    assert hold_for(1_000, 0) == HOLD_MAX


def test_a_worker_alone_on_the_board_sees_no_one_else(board: Board) -> None:
    board.take(0)
    board.publish(7)
    assert board.fewest_elsewhere() is None


def test_the_least_busy_live_worker_is_seen_and_stale_ones_are_not(board: Board) -> None:
    now = time.monotonic()
    _write_slot(board.path, 0, os.getpid() + 100_000, 5, now)
    _write_slot(board.path, 2, os.getpid() + 100_002, 0, now - STALE_AFTER - 1)  # hung
    board.take(1)
    board.publish(9)
    assert board.fewest_elsewhere() == 5
    _write_slot(board.path, 2, os.getpid() + 100_002, 2, time.monotonic())
    assert board.fewest_elsewhere() == 2


def test_a_worker_writes_only_its_own_slot_and_a_cleared_slot_is_ignored(
    board: Board,
) -> None:
    now = time.monotonic()
    _write_slot(board.path, 0, os.getpid() + 100_000, 1, now)
    _write_slot(board.path, 2, os.getpid() + 100_002, 3, now)
    board.take(1)
    board.publish(4)
    slots = [
        Board._SLOT.unpack_from(board.path.read_bytes(), i * Board._SLOT.size) for i in range(3)
    ]
    assert [slot[:2] for slot in slots] == [
        (os.getpid() + 100_000, 1),
        (os.getpid(), 4),
        (os.getpid() + 100_002, 3),
    ]
    board.clear(0)  # that worker exited; the supervisor empties its slot
    assert board.fewest_elsewhere() == 3
