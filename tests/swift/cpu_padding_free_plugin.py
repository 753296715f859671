"""Test-only ``--external_plugins`` file: lets ``--padding_free``/``--packing`` run on CPU.

MS-Swift 4.6 refuses both without a flash-attention implementation, which needs a GPU. On
CPU, transformers' sdpa attention keeps packed sequences apart by their position_ids when
there is no attention mask and no KV cache (a training forward), so a packed batch gives the
same logits as the padded one; the tests check exactly that. Only the argument check is
lifted; everything else is MS-Swift's own padding-free/packing path.
"""

from swift.arguments import SftArguments


def _check_padding_free(self):
    if self.packing:
        self.padding_free = True  # what MS-Swift's own check does besides refusing


SftArguments._check_padding_free = _check_padding_free
