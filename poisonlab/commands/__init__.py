"""CLI sub-commands, one per module; each defines NAME, HELP, add_arguments(parser), run(args)."""
