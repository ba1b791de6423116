# meshetcd container image: a static binary on distroless, run as the
# non-root user 65532, data under /var/lib/meshetcd (mount a volume there).
#
#   docker build -t meshetcd --build-arg VERSION=0.1.0 .
#   docker run -p 2379:2379 -v meshetcd-data:/var/lib/meshetcd meshetcd \
#     --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://127.0.0.1:2379
#
# Flags and ETCD_*/MESHETCD_* variables are the binary's (README, "Flags").

FROM docker.io/library/golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION, when given, is stamped into --version and /version, as make release does.
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w ${VERSION:+-X github.com/meshetcd/meshetcd/embed.Version=${VERSION}}" \
      -o /out/usr/local/bin/meshetcd ./cmd/meshetcd \
 && mkdir -p /out/var/lib/meshetcd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/usr/local/bin/meshetcd /usr/local/bin/meshetcd
COPY --from=build --chown=65532:65532 --chmod=0700 /out/var/lib/meshetcd /var/lib/meshetcd
USER 65532:65532
ENV ETCD_DATA_DIR=/var/lib/meshetcd
VOLUME /var/lib/meshetcd
EXPOSE 2379 2380
ENTRYPOINT ["/usr/local/bin/meshetcd"]
