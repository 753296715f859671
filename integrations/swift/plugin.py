"""MS-Swift ``--external_plugins`` file: registers rift-losses' adapter without the .pth hook.

    swift sft --external_plugins "$(python -m rift_losses.integrations.swift)" --loss_type rift ...

Needed only where ``.pth`` start-up code is disabled (``RIFT_LOSSES_AUTOLOAD=0`` or a site
that skips .pth files); otherwise the adapter is already registered. This file may be copied
anywhere: it only imports the installed package. Its path is left out of ``args.json`` (an
absolute path there breaks ``swift infer``/``export`` on other machines).
"""

__rift_losses_swift_plugin__ = True

from rift_losses.integrations.swift import install  # noqa: E402

install()
