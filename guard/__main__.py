from guard.cli.main import entry

entry()
