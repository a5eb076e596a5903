from mp2amp.cli import main

main()
