module github.com/anodyne/anodyne/packages/clusters/testdata/webhook

go 1.24.0
