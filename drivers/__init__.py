"""Physical test-chip backends and the chip emulator.

* :mod:`drivers.protocol` — the wire protocol (framing, blocks, encodings), the one
  module both ends share; specified in ``docs/protocol.md``.
* :mod:`drivers.client` — :class:`~drivers.client.RemoteChip`, the Chip backend that
  speaks the protocol over any :class:`~drivers.link.Link`: the command layer over
  :mod:`drivers.session` (send a frame, get its reply: retries, reconnect, error
  translation), :mod:`drivers.bulk` (windowed uploads and fetches) and
  :mod:`drivers.link_quality` (chunk sizes learnt from the link's byte error rate), with
  :mod:`drivers.link_settings` (timeouts, retry budget, counters) and
  :mod:`drivers.attempts` (failed attempts and the retry budget).
* :mod:`drivers.serial_backend` / :mod:`drivers.visa_backend` — the two links (pyserial,
  pyvisa) and their URI openers ``serial://…`` and ``visa://…``.
* :mod:`drivers.server`, :mod:`drivers.faults`, :mod:`drivers.emulator` — the device
  side: a Chip served through the protocol over a pseudo-terminal or loopback TCP, with
  fault injection. Never needed by the real-chip code paths.

``harness`` reaches these modules only through :mod:`harness.chip.registry`.
"""
