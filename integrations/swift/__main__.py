"""``python -m rift_losses.integrations.swift``: print the ``--external_plugins`` file's path."""

import sys

from rift_losses.integrations.swift import plugin_path

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        print('usage: swift sft --external_plugins "$(python -m rift_losses.integrations.swift)" --loss_type rift ...')
    else:
        print(plugin_path())
