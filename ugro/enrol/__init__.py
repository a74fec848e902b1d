"""From bare machines to a cluster: `ugro init` (this machine, UGRO's own key and known_hosts)
and `ugro node add|list|remove|rekey` (a node's host key checked once, UGRO's key installed
with the password typed into ssh, what the node lacks named, cluster.yaml edited in place)."""
