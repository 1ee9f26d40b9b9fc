"""What one invocation was asked to do (built from the command line by run.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    duration: int  # measured seconds per test
    warmup: int  # discarded seconds of load before each measured window
    rounds: int
    threads: int  # wrk -t
    connections: int  # wrk -c, and the FastCGI client's -c in --direct mode
    start_timeout: float
    fcgibridge: tuple[str, ...]  # the command that starts fcgibridge
    direct: bool = False
    direct_processes: int = 1  # fcgibridge bench -P in --direct mode

    def load_words(self) -> str:
        return (f"wrk -t{self.threads} -c{self.connections}; {self.warmup} s warm-up + {self.duration} s measured "
                f"per test; {self.rounds} round(s), interleaved")
