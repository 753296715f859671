"""From sampled responses to a RIFT buffer: the logic behind the ``rift-losses`` command.

A RIFT buffer is a JSONL file of (prompt, response, reward) rows: for each problem the model
sampled K responses (the paper: K = 8), a verifier graded each final answer, and each response
got a reward (paper section 4.1: +1.0 if correct, -0.2 if not; or group-normalized, eq. 6-8).

- :func:`label`: grade responses against reference answers with ``math-verify`` and write the
  paper's constant rewards.
- :func:`normalize`: normalize rewards within whole groups with the core's
  :func:`rift_losses.normalize_rewards` (eq. 6-8).
- :func:`stats`: the paper's Table 1 (responses, positive, negative, % positive) and Table 4
  (problems with mixed rewards) for a buffer.
- :func:`convert`: write the buffer in MS-Swift's or LLaMA-Factory's dataset layout.

Every command streams its input one row at a time (memory does not grow with the number of
rows; ``stats`` and ``normalize`` keep 16-32 bytes per distinct group), writes its output to a
temporary file that is renamed only on success, and stops on bad input with ``file:line`` and
the field. Importing :mod:`rift_losses` does not import this package; ``math-verify`` is
imported only by :func:`label`.
"""

from ._io import DataError
from .commands import GRADES, HOSTS, convert, label, normalize, stats

__all__ = ["DataError", "GRADES", "HOSTS", "convert", "label", "normalize", "stats"]
