module github.com/anodyne/anodyne/release/images

go 1.24.0
