"""The adapter core: what every host adapter does around the loss, written once.

- :mod:`.loss`: the loss of one micro-batch (shift the labels and per-token rewards, the
  in-place-gradient decision, :func:`rift_losses.token_logprobs` + :func:`rift_losses.logprob_loss`),
  the scale Hugging Face's Trainer applies to the loss it logs, and the sequence counter of
  ``level="sequence"`` (a proxy for ``Trainer._get_num_items_in_batch``).
- :mod:`.fused`: the fused LM head in a training step (the head's forward returns target
  log-probs, :func:`rift_losses.fused_token_logprobs`, instead of logits), its refusals, and
  :mod:`.switch` (``RIFT_FUSED_HEAD``, torch-free).
- :mod:`.stats`: the RIFT statistics (``pos_loss``, ``neg_loss``, ...) summed on device and
  summarized once per logging window, all-reduced over ranks.
- :mod:`.patching`: replacing a host's method or module attribute once, with a version check.
- :mod:`.hook`: the errors the ``.pth`` start-up hook kept, re-raised for a RIFT run.

The host folders (``swift/``, ``llamafactory/``, ``trl/``) call these and keep only what is
specific to their host. Reading rows (rewards, groups, the prompt key) is ``.._common``'s,
on top of :mod:`rift_losses._fields` (shared with the ``rift-losses`` command).
"""
