from melonbench.cli import main

main()
