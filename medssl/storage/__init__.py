"""File storage primitives that every layer uses: crash-safe writes (:mod:`~medssl.storage.atomic`) and content
hashing (:mod:`~medssl.storage.hashing`). Readers, the index and the cache (data), checkpoints and logs (training),
encoder cards (models), reports and figures (eval) all write and fingerprint files the same way; none of them owns
these, so they live below all of them.
"""
