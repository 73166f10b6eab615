from pmcp_build.entry import main

main()
