"""What makes the tutorial's two scripts hold up as real programs.

- ``cli``: the options both scripts share, flushed output, one-line ``error:`` exits.
- ``broker``: the broker URL, and what a pika error means in words a user can act on.
- ``publisher``: publishing with confirms, so that "Sent" means stored.
- ``consumer``: tasks off pika's I/O loop, acks through the connection's thread, reconnects, signals.
"""
