from lightning_rlhf.cli import cli_main

cli_main()
