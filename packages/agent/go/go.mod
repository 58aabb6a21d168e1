module anodyne.local/agent

go 1.24
