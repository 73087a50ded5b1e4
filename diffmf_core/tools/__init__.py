"""The ``diffmf`` subcommands that are tools around the live path and the network: fuse, bag
(one module per action), bench, flops, export, calib. Each module has ``configure_parser(p)`` and
``main(args)``; ``diffmf_core.cli`` dispatches to them. Nothing below this package imports it."""
