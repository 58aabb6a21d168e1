package main

import (
	"github.com/spf13/cobra"
	"go.etcd.io/etcd/etcdctl/v3/ctlv3"
	"go.etcd.io/etcd/etcdutl/v3/etcdutl"
	"go.etcd.io/etcd/server/v3/etcdmain"
)

func runEtcd(args []string) int {
	etcdmain.Main(args)
	return 0
}

func runEtcdctl(_ []string) int {
	ctlv3.MustStart()
	return 0
}

// runEtcdutl assembles the etcdutl root command from its importable subcommands
// (upstream's own root lives in a main package).
func runEtcdutl(_ []string) int {
	root := &cobra.Command{Use: "etcdutl", Short: "An administrative command line tool for etcd3."}
	root.PersistentFlags().StringVarP(&etcdutl.OutputFormat, "write-out", "w", "simple", "set the output format (fields, json, protobuf, simple, table)")
	root.AddCommand(
		etcdutl.NewDefragCommand(),
		etcdutl.NewSnapshotCommand(),
		etcdutl.NewHashKVCommand(),
		etcdutl.NewVersionCommand(),
		etcdutl.NewMigrateCommand(),
	)
	if err := root.Execute(); err != nil {
		return 1
	}
	return 0
}
