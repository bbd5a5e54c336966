# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pasidctl_global_optspecs
    string join \n socket= json h/help V/version
end

function __fish_pasidctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pasidctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pasidctl_using_subcommand
    set -l cmd (__fish_pasidctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pasidctl -n "__fish_pasidctl_needs_command" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_needs_command" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -s V -l version -d 'Print version'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "pasids" -d 'List allocated PASIDs with their holders and reference counts'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "vms" -d 'List VM slots with usage, quota and connection state'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "stats" -d 'Whole-host figures'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "metrics" -d 'Print every metric in the OpenMetrics text format'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "watch" -d 'Live view of the VMs and their usage, refreshed until Ctrl-C'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "get" -d 'Take a host reference on a PASID (pins it until put)'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "put" -d 'Drop a host reference on a PASID; says whether it was freed'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "release" -d 'Release every PASID reference a VM holds'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "reattach" -d 'Re-plug a running VM\'s vpasid device through QEMU\'s QMP socket'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "detach" -d 'Unplug a VM\'s vpasid device through QMP, keeping its PASIDs here'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "attach" -d 'Plug a vpasid device for a VM through QMP and wait for its driver'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "export" -d 'Print what a VM holds as JSON, for `reserve` on another host'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "reserve" -d 'Reserve a VM\'s PASIDs before it arrives (migration pre-flight)'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "quota" -d 'Set a VM\'s quota'
complete -c pasidctl -n "__fish_pasidctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand pasids" -l vm -d 'Only the PASIDs this VM holds a reference on' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand pasids" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand pasids" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand pasids" -s h -l help -d 'Print help'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand vms" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand vms" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand vms" -s h -l help -d 'Print help'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand stats" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand stats" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand stats" -s h -l help -d 'Print help'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand metrics" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand metrics" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand metrics" -s h -l help -d 'Print help'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand watch" -s i -l interval -d 'Seconds between refreshes (fractions allowed, at least 0.1)' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand watch" -s c -l count -d 'Stop after N refreshes (default: run until Ctrl-C)' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand watch" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand watch" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand get" -l holder -d 'Host holder name' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand get" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand get" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand get" -s h -l help -d 'Print help'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand put" -l holder -d 'Host holder name' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand put" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand put" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand put" -s h -l help -d 'Print help'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand release" -l vm -d 'VM name' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand release" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand release" -l force -d 'Release even while the VM is connected: strips every PASID from the running guest, whose devices may still have them programmed'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand release" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand release" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reattach" -l vm -d 'VM name' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reattach" -l qmp -d 'The VM\'s QMP socket (QEMU `-qmp unix:PATH,server=on,wait=off`)' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reattach" -l timeout -d 'Seconds to wait for the guest to release the old device and for the new one to connect' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reattach" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reattach" -l force -d 'Re-plug a connected VM that holds PASIDs although its hold-over is 0: the unplug then releases every PASID the guest still uses, and the daemon may give them to other VMs before the guest reconciles'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reattach" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reattach" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand detach" -l vm -d 'VM name' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand detach" -l qmp -d 'The VM\'s QMP socket (QEMU `-qmp unix:PATH,server=on,wait=off`)' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand detach" -l hold -d 'Least hold-over after the disconnect, in seconds' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand detach" -l timeout -d 'Seconds to wait for the guest to release the device' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand detach" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand detach" -l keep -d 'Keep the hold-over when the VM\'s QEMU process exits (same-host migration, where the source QEMU exits before the destination attaches). Without it, the source QEMU\'s exit releases the PASIDs at once'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand detach" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand detach" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -l vm -d 'VM name' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -l qmp -d 'The VM\'s QMP socket (QEMU `-qmp unix:PATH,server=on,wait=off`)' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -l vm-socket -d 'The VM\'s backend socket, if not the one the daemon lists for it (`--socket` is the control socket\'s option)' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -l device -d 'The device to plug as JSON (`detach --json` or `export` output, or its "device"); `-` reads standard input' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -l bus -d 'PCI bus to plug on (q35: the pcie-root-port\'s id)' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -l addr -d 'PCI address on that bus (e.g. `4` or `04.0`)' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -l timeout -d 'Seconds to wait for the driver\'s RECONCILE or RESET' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand attach" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand export" -l vm -d 'VM name' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand export" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand export" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reserve" -l vm -d 'VM name (its slot must exist on this daemon)' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reserve" -l from -d '`export` output; `-` reads standard input' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reserve" -l hold -d 'Seconds to keep the reservation (default: the VM\'s hold-over on this daemon if it has one, else 300)' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reserve" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reserve" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand reserve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand quota" -l vm -d 'VM name' -r
complete -c pasidctl -n "__fish_pasidctl_using_subcommand quota" -l socket -d 'Control socket of the daemon' -r -F
complete -c pasidctl -n "__fish_pasidctl_using_subcommand quota" -l json -d 'Print the daemon\'s JSON instead of a table'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand quota" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "pasids" -d 'List allocated PASIDs with their holders and reference counts'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "vms" -d 'List VM slots with usage, quota and connection state'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "stats" -d 'Whole-host figures'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "metrics" -d 'Print every metric in the OpenMetrics text format'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "watch" -d 'Live view of the VMs and their usage, refreshed until Ctrl-C'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "get" -d 'Take a host reference on a PASID (pins it until put)'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "put" -d 'Drop a host reference on a PASID; says whether it was freed'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "release" -d 'Release every PASID reference a VM holds'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "reattach" -d 'Re-plug a running VM\'s vpasid device through QEMU\'s QMP socket'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "detach" -d 'Unplug a VM\'s vpasid device through QMP, keeping its PASIDs here'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "attach" -d 'Plug a vpasid device for a VM through QMP and wait for its driver'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "export" -d 'Print what a VM holds as JSON, for `reserve` on another host'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "reserve" -d 'Reserve a VM\'s PASIDs before it arrives (migration pre-flight)'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "quota" -d 'Set a VM\'s quota'
complete -c pasidctl -n "__fish_pasidctl_using_subcommand help; and not __fish_seen_subcommand_from pasids vms stats metrics watch get put release reattach detach attach export reserve quota help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
