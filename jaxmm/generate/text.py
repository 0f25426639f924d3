"""Host-side text bookkeeping for one request: incremental detokenisation and stop strings.

Streaming must never emit text that is later taken back. Two things can make the tail of
the decoded text provisional: an incomplete multi-byte UTF-8 character (byte-level BPE
decodes it as U+FFFD until its last byte arrives) and a prefix of a stop string (the next
token might complete it, and the stop string must not appear in the output). Both are
held back until resolved; `finish()` releases whatever is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

_REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class TextTracker:
    """Turns a growing list of generated token ids into safe text deltas.

    Decoding is windowed (the last few tokens before the unread ones give the context
    tokenizers need for spacing), so each step costs O(tokens in the window), not
    O(tokens so far).
    """

    def __init__(self, tokenizer: Decoder, stop: Sequence[str] = ()):
        self._tok = tokenizer
        self._stop = tuple(stop)
        self._max_stop = max((len(s) for s in self._stop), default=0)
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the decode window
        self._read_offset = 0  # ids before this are already turned into text
        self.text = ""  # all decoded text so far (may include held-back tail)
        self._emitted = 0  # number of characters of `text` already returned
        self.stopped = False  # a stop string was found; `text` is truncated before it

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Append one generated token; return the text that is now final (maybe "")."""
        if self.stopped:
            return ""
        self._ids.append(int(token_id))
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(_REPLACEMENT):
            self.text += full[len(prefix) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """End of generation: flush undecodable tails and held-back stop prefixes."""
        if not self.stopped and self._read_offset < len(self._ids):
            prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
            full = self._decode(self._ids[self._prefix_offset :])
            self.text += full[len(prefix) :]
            self._read_offset = len(self._ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self._stop and not self.stopped:
            # A stop string can only newly appear in the part not yet searched: start the
            # search a stop-length before the unemitted text.
            start = max(0, self._emitted - self._max_stop)
            hits = [i for s in self._stop if (i := self.text.find(s, start)) >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
        end = len(self.text)
        if not final and not self.stopped:
            end -= self._held_back()
        delta = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return delta

    def _held_back(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        for n in range(min(self._max_stop - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self._stop):
                return n
        return 0
