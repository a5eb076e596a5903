from mp2amp.entry import main

main()
