"""LLaMA-Factory adapter: RIFT as a training-YAML option, the reward as a dataset column.

Users write, beside the usual keys of an SFT YAML::

    use_rift_loss: true
    rift_loss: rift                    # one of rift_losses.LOSSES
    rift_reward_normalization: none    # none or one of rift_losses.NORMALIZATIONS
    rift_level: token                  # one of rift_losses.LEVELS

and map the reward (and, for normalization, the group) column of each dataset in
``dataset_info.json``: ``"columns": {..., "reward": "score", "group": "problem_id"}``.

How it gets in (LLaMA-Factory has no loss registry and no plugin hook):

- :mod:`._autoload`: called by ``_rift_losses_hook`` right after
  ``llamafactory.hparams.parser`` is imported (every process, torchrun workers included). It
  adds the ``rift_*`` keys as real fields of LLaMA-Factory's ``FinetuningArguments`` (a
  subclass swapped into the parser's lists), so a misspelt key fails like any unknown key.
- :mod:`._args`: after a YAML with ``use_rift_loss: true`` is parsed, refuses what cannot work
  (other loss options, packing, streaming, other stages) and installs the runtime pieces.
- :mod:`._data`: carries the reward column through LLaMA-Factory's format converter and
  dataset processor one sample at a time (a dropped malformed sample takes its reward with
  it), validates every value before training, normalizes over whole groups of the dataset.
- :mod:`._run`: the parsed run's options and the keys that carry rewards (a leaf: no cycle).
- :mod:`._trainer`: collator, trainer and log callback subclasses: float32 rewards to the
  loss, ``loss = sum / num_items_in_batch`` (gradient accumulation and data parallel equal one
  large batch), the positive/negative parts of the loss in ``trainer_log.jsonl``. The loss, its
  logged scale, the sequence counter and the statistics window are ``integrations/_core``'s.
- :mod:`.launcher`: ``rift-llamafactory-cli``, the explicit route for sites that refuse
  ``.pth`` start-up code (it also routes torchrun workers through itself).

Nothing here imports LLaMA-Factory at ``import rift_losses`` time.
"""
