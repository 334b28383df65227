package image

import "encoding/binary"

// GetRefcount returns entry i of a refcount block whose entries are
// 1<<order bits wide. Sub-byte entries are packed least significant bit
// first, wider ones are big-endian, as in the qcow2 specification.
func GetRefcount(block []byte, i uint64, order uint32) uint64 {
	switch order {
	case 0:
		return uint64(block[i/8]>>(i%8)) & 1
	case 1:
		return uint64(block[i/4]>>(2*(i%4))) & 3
	case 2:
		return uint64(block[i/2]>>(4*(i%2))) & 15
	case 3:
		return uint64(block[i])
	case 4:
		return uint64(binary.BigEndian.Uint16(block[2*i:]))
	case 5:
		return uint64(binary.BigEndian.Uint32(block[4*i:]))
	default:
		return binary.BigEndian.Uint64(block[8*i:])
	}
}

// SetRefcount stores v (which must fit the entry width) as entry i.
func SetRefcount(block []byte, i uint64, order uint32, v uint64) {
	switch order {
	case 0:
		sh := i % 8
		block[i/8] = block[i/8]&^(1<<sh) | byte(v&1)<<sh
	case 1:
		sh := 2 * (i % 4)
		block[i/4] = block[i/4]&^(3<<sh) | byte(v&3)<<sh
	case 2:
		sh := 4 * (i % 2)
		block[i/2] = block[i/2]&^(15<<sh) | byte(v&15)<<sh
	case 3:
		block[i] = byte(v)
	case 4:
		binary.BigEndian.PutUint16(block[2*i:], uint16(v))
	case 5:
		binary.BigEndian.PutUint32(block[4*i:], uint32(v))
	default:
		binary.BigEndian.PutUint64(block[8*i:], v)
	}
}

// MaxRefcount returns the largest refcount an entry of the given order holds.
func MaxRefcount(order uint32) uint64 {
	if order >= 6 {
		return ^uint64(0)
	}
	return 1<<(1<<order) - 1
}

// RefcountMetadataSize returns the number of refcount blocks and the bytes of
// refcount blocks plus refcount table needed to count clusters clusters and
// the refcount structures themselves. With generous set it leaves headroom as
// QEMU does when it grows the table.
func RefcountMetadataSize(clusters, clusterSize uint64, order uint32, generous bool) (blocks, bytes uint64) {
	perTableCluster := clusterSize / 8
	perBlock := clusterSize * 8 >> order
	var table, n, last uint64
	for {
		last = n
		blocks = ceilDiv(clusters+table+blocks, perBlock)
		table = ceilDiv(blocks, perTableCluster)
		n = clusters + blocks + table
		if n == last && generous {
			clusters += ceilDiv(table, 2)
			n = 0
			generous = false
		}
		if n == last {
			break
		}
	}
	return blocks, (blocks + table) * clusterSize
}
