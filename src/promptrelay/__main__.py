from promptrelay.cli import main

main()
