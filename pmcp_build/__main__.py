from pmcp_build.cli import main

main()
