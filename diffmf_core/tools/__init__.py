"""The ``diffmf`` subcommands: fuse, train, eval, bag (one module per action), bench, flops, export,
calib. Each module has ``configure_parser(p)`` and ``main(args)``; ``diffmf_core.cli`` dispatches to
them. They drive the live path and training/; nothing below this package imports it."""
