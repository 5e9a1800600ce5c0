"""The only code that touches the OS.  Thin and idempotent: "ensure X" creates X
when missing and leaves it alone when present; nothing here knows the log.

    names.py          every name given to a kernel object (bridges, VXLAN devices, veths, netns)
    statedir.py       a container's state directory: the one owner of its files
    net.py            addresses, routes, link indexes; the neighbour table's limits
    netns.py          named network namespaces
    rtnl.py           rtnetlink by hand: the requests and dumps of the layer
    overlay.py        bridges, VXLAN devices, FDB and neighbour entries
    container_net.py  a container's namespace and veth
    watch.py          rtnetlink: which of our links and entries were removed
    process.py        a container's first process: namespaces, root, capabilities, exec
    enter.py          a process inside a running container (exec)
    cgroups.py        memory, pids and CPU limits (v1 or v2)
    shim.py           the process that supervises one container
    supervise.py      starting shims (a warm one waits), signals, waiting for ends
    images.py         this host's image store: unpacking tarballs safely
    syscalls.py       mount, pivot_root, prctl, capset through ctypes
"""
