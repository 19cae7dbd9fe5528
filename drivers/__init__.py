"""Physical test-chip backends and the chip emulator.

* :mod:`drivers.protocol` — the wire protocol (framing, blocks, encodings), the one
  module both ends share; specified in ``docs/protocol.md``.
* :mod:`drivers.client` — :class:`~drivers.client.RemoteChip`, the Chip backend that
  speaks the protocol over any :class:`~drivers.link.Link` (retries, reconnect, chunking).
* :mod:`drivers.serial_backend` / :mod:`drivers.visa_backend` — the two links (pyserial,
  pyvisa) and their URI openers ``serial://…`` and ``visa://…``.
* :mod:`drivers.server`, :mod:`drivers.faults`, :mod:`drivers.emulator` — the device
  side: a Chip served through the protocol over a pseudo-terminal or loopback TCP, with
  fault injection. Never needed by the real-chip code paths.

``harness`` reaches these modules only through :mod:`harness.chip.registry`.
"""
