from photosearch.cli import main

main()
