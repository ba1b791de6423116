package embed

// Version is meshetcd's own release version, printed by `meshetcd --version`
// and reported as "meshetcd" by the /version endpoint. It is a variable only
// so that release builds can stamp it (`make release VERSION=...` links with
// -X github.com/meshetcd/meshetcd/embed.Version=...); nothing assigns it.
var Version = "0.1.0-alpha"

// APIVersion is the etcd API version meshetcd speaks (etcd 3.7.x clients and
// etcdctl 3.7.x work against it unchanged).
const APIVersion = "3.7"
