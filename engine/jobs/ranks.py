"""The processes of one nightly run and what they say to each other.

`recengine nightly --nproc N`, or `torchrun ... -m engine.cli nightly` on several machines,
starts N ranks. Rank 0 does what needs every user or item at once (the feature set, the
two-tower fits, the index, the re-ranker's and pCTR's fits, the auction's budgets, the
evaluation, publishing); the per-user work (candidates, features and scores of the product
lists, the ads' pCTR) is split by a stable hash of the user id. The ranks talk over a gloo
process group of their own, built on the store torchrun's rendezvous gives: barriers between
stages, rank 0's decisions broadcast as JSON, counts summed. It is not the default process
group, so a stage on rank 0 can still open a one-process group for its TorchRec fit.

One process is a `Ranks` of size one whose collectives return at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from threadpoolctl import threadpool_limits

from embeddings.sharding import one_process
from pipelines.errors import ArtifactError

PROBE = ".rank-probe"
"""A file rank 0 writes in the artifacts root for the other ranks to find: every rank must
see the same root (one machine, or a shared filesystem)."""


def launched_ranks() -> int:
    """The world size torchrun set for this process (1 when it was not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Ranks:
    """This process's rank among `size`, and the group they share (None when alone)."""

    rank: int = 0
    size: int = 1
    local_size: int = 1  # ranks on this machine: the cores are theirs to share
    group: Any = None  # a gloo backend (torch's stubs do not type its collectives)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def join(cls, timeout: timedelta) -> Ranks:
        """The ranks torchrun started, or one process. `timeout` bounds every wait, the
        longest being the other ranks' wait while rank 0 fits the models."""
        if launched_ranks() <= 1:
            return cls()
        store, rank, size = next(dist.rendezvous("env://", timeout=timeout))
        group = dist.ProcessGroupGloo(
            dist.PrefixStore("recengine-nightly", store), rank, size, timeout
        )
        local = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        return cls(rank, size, local, group)

    def barrier(self) -> None:
        """Wait until every rank got here."""
        if self.group is not None:
            self.group.barrier().wait()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` (JSON), on every rank."""
        if self.group is None:
            return value
        data = json.dumps(value, default=str).encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.int64)
        self.group.broadcast(size, 0).wait()
        buf = torch.zeros(int(size.item()), dtype=torch.uint8)
        if self.is_main:
            buf[:] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self.group.broadcast(buf, 0).wait()
        return json.loads(bytes(buf.numpy()))

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (JSON), in rank order, on every rank."""
        if self.group is None:
            return [value]
        data = json.dumps(value, default=str).encode()
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        self.group.allgather([sizes], [torch.tensor([len(data)], dtype=torch.int64)]).wait()
        longest = max(int(s.item()) for s in sizes)
        mine = torch.zeros(longest, dtype=torch.uint8)
        if data:
            mine[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        outs = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.size)]
        self.group.allgather([outs], [mine]).wait()
        return [
            json.loads(bytes(o.numpy()[: int(s.item())])) for o, s in zip(outs, sizes, strict=True)
        ]

    def total(self, value: int | float) -> float:
        """The sum of every rank's `value`."""
        return float(sum(self.gather(value)))

    def mine(self, ids: Sequence[str]) -> np.ndarray:
        """A mask of the `ids` this rank owns: a stable hash of each id (the same on every
        machine, run and library version) modulo the ranks."""
        if self.size == 1:
            return np.ones(len(ids), bool)
        return user_ranks(ids, self.size) == self.rank

    def threads(self) -> int:
        """The cores this rank's per-user work may use: the machine's, shared by its ranks."""
        return max(1, (os.cpu_count() or 1) // self.local_size)

    @contextmanager
    def cores(self, shared: bool) -> Iterator[None]:
        """Within it, torch, OpenMP and BLAS use this rank's share of the machine's cores when
        the ranks split the stage's work (`shared`), else every core: rank 0 works alone while
        the others wait (torchrun starts each rank with one OpenMP thread), and its TorchRec
        fits open a process group of one instead of joining torchrun's."""
        if self.size == 1:
            yield
            return
        n = self.threads() if shared else (os.cpu_count() or 1)
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            with threadpool_limits(n), nullcontext() if shared else one_process():
                yield
        finally:
            torch.set_num_threads(before)

    def check_root(self, root: Path) -> None:
        """Refuse to run unless every rank sees `root` as the same folder: rank 0 writes a
        token there and each rank reads it back."""
        if self.size == 1:
            return
        probe = root / PROBE
        token = ""
        if self.is_main:
            token = hashlib.sha256(os.urandom(16)).hexdigest()
            probe.write_text(token)
        token = self.broadcast(token)
        try:
            seen = probe.read_text() == token
        except OSError:
            seen = False
        answers = self.gather([seen, socket.gethostname()])
        if self.is_main:
            probe.unlink(missing_ok=True)
        blind = [f"rank {r} on {host}" for r, (ok, host) in enumerate(answers) if not ok]
        if blind:
            raise ArtifactError(
                root,
                f"{', '.join(blind)} cannot see the artifacts root rank 0 writes to: every rank "
                "of a nightly run must see one shared artifacts folder (one machine, or a "
                "shared filesystem mounted at the same path)",
            )


def user_ranks(ids: Sequence[str], size: int) -> np.ndarray:
    """The rank that owns each id: the first 8 bytes of its BLAKE2b digest modulo `size`."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
            % size
            for i in ids
        ),
        np.int64,
        count=len(ids),
    )


def rank_pids(root_pid: int) -> dict[int, int]:
    """rank -> pid of the ranks `torchrun` started under process `root_pid` (its workers, each
    in a session of its own, found by the RANK their environment holds; Linux /proc). For
    watching a run from outside: the benchmarks sample their memory, the tests kill one."""
    parent = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            parent[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out = {}
    for pid in parent:
        up = pid
        while up in parent and up != root_pid:
            up = parent[up]
        if up != root_pid or pid == root_pid:
            continue
        try:
            env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = [kv[5:] for kv in env if kv.startswith(b"RANK=")]
        if rank:
            out[int(rank[0])] = pid
    return out
