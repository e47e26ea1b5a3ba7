#!/bin/sh
# /init of the Linux test guest (packed by tests/guest/linux.py with busybox-static).
#
# Every line it prints starts with "runu-linux-guest: ". Words it honours anywhere on
# the kernel command line (/proc/cmdline, before or after "--"):
#   netdev.ip=CIDR[:GW[:DNS0[:DNS1[:HOSTNAME[:DOMAIN]]]]]  (Unikraft 0.16's form)
#               load virtio_net, give the first ethernet link CIDR, bring it up,
#               default route via GW; DNS0/DNS1/DOMAIN go to /etc/resolv.conf and
#               HOSTNAME becomes the hostname ("network: from netdev.ip", then a
#               "network: ..." line for each); it wins over the older form:
#   netdev.ipv4_addr=A netdev.ipv4_gw_addr=G netdev.ipv4_subnet_mask=M
#               the same with A/M (M defaults to 255.255.255.0) and G
#   ping=IP     ping IP (up to 5 tries, 1 s each): "ping IP: ok" or "ping IP: fail"
#               (repeatable)
#   serve=PORT  after the network is up, serve HTTP on PORT (busybox httpd): a GET of /
#               answers "runu-linux-guest http PORT"; says "http: serving on PORT"
#               (repeatable)
#   panic       crash the kernel (sysrq c) instead of powering off: with panic=-1 the
#               guest resets (QEMU -no-reboot exits 0); with QEMU's `-device pvpanic
#               -action panic=exit-failure` QEMU exits 1 (pvpanic is loaded at boot)
#   runu.mount=TAG:DEST:MODE[:FILE]
#               (runu's shares, see docs/bundles.md) mount the virtio-fs TAG on
#               /run/runu/TAG (once) and bind it, or its file FILE, on DEST; fields are
#               %XX-escaped. Mounted read-write whatever MODE says, so that a read-only
#               share is seen to be enforced by the host. "mount DEST: ok|fail"
#   runu.disk=DEV
#               (Firecracker's copies of runu's mounts) the shares are the top directories
#               of the ext4 file system on /dev/DEV (load virtio_blk, mount it on
#               /run/runu/disk, read-write if the device lets it, else read-only, so a
#               read-only drive is seen to be enforced by the host): each TAG of a
#               runu.mount= word is /run/runu/disk/TAG instead of a virtio-fs tag.
#               "disk DEV: ro|rw" (how it got mounted) or "disk DEV: fail"
#   runu.root=TAG:MODE  mount the virtio-fs TAG (the bundle's rootfs) on /newroot
#   mount9p=TAG:DIR[:OPTIONS]
#               (bench/bench_mounts.py) load the "9p" module group when the initramfs has one
#               and mount the virtio-9p TAG on DIR with -o trans=virtio,version=9p2000.L plus
#               OPTIONS (comma-separated, e.g. msize=524288,cache=loose): "mount9p DIR: ok
#               <the options the kernel took>" or "mount TAG: <error>" and "mount9p DIR: fail"
#   cat=PATH    print "cat PATH: <first line>" (or "cat PATH: fail")
#   write=PATH  write "written by the guest" into PATH: "write PATH: ok|fail"
#   zerofile=PATH:MIB   (before the benchmarks) write MIB MiB of zeros into PATH, e.g. on the
#               guest's own tmpfs for a readbench there: "zerofile PATH: ok|fail"
#   readbench=PATH      time `cat PATH > /dev/null`: "readbench PATH: BYTES bytes in CS cs"
#   createbench=DIR     time creating 1000 small files in DIR (a shell loop):
#               "createbench DIR: 1000 files in CS cs" (centiseconds, from /proc/uptime)
#   idle        stay up (the host can ping the guest) until the ACPI power button is
#               pressed (QEMU's system_powerdown, runu kill TERM): then print "power
#               button: powering off" and power off; otherwise power off at once, so
#               QEMU (with -no-reboot) exits with status 0
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

say() { echo "runu-linux-guest: $*"; }

load_modules() {
	local m
	# /lib/modules/GROUP.list: one module file name a line, dependencies first (written by linux.py).
	[ -f "/lib/modules/$1.list" ] || return 0
	while read -r m; do
		insmod "/lib/modules/$m" 2>/dev/null
	done < "/lib/modules/$1.list"
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say "booted"
load_modules boot
read -r cmdline < /proc/cmdline
say "cmdline: $cmdline"

addr= gw= mask=255.255.255.0 idle= pings= serves= panic= ip4= shares= root= disk= cats= writes= readbenches= createbenches= ninep= zerofiles=
for word in $cmdline; do
	case "$word" in
	netdev.ip=*) ip4=${word#*=} ;;
	runu.mount=*) shares="$shares ${word#*=}" ;;
	runu.root=*) root=${word#*=} ;;
	runu.disk=*) disk=${word#*=} ;;
	cat=*) cats="$cats ${word#*=}" ;;
	write=*) writes="$writes ${word#*=}" ;;
	readbench=*) readbenches="$readbenches ${word#*=}" ;;
	createbench=*) createbenches="$createbenches ${word#*=}" ;;
	mount9p=*) ninep="$ninep ${word#*=}" ;;
	zerofile=*) zerofiles="$zerofiles ${word#*=}" ;;
	netdev.ipv4_addr=*) addr=${word#*=} ;;
	netdev.ipv4_gw_addr=*) gw=${word#*=} ;;
	netdev.ipv4_subnet_mask=*) mask=${word#*=} ;;
	ping=*) pings="$pings ${word#*=}" ;;
	serve=*) serves="$serves ${word#*=}" ;;
	idle) idle=1 ;;
	panic) panic=1 ;;
	esac
done

# 255.255.255.0 -> 24 (counts the leading one bits; a non-contiguous mask is refused)
prefix_of() {
	local n=0 seen_zero= octet bit
	local IFS=.
	for octet in $1; do
		bit=128
		while [ $bit -gt 0 ]; do
			if [ $((octet & bit)) -ne 0 ]; then
				[ -n "$seen_zero" ] && return 1
				n=$((n + 1))
			else
				seen_zero=1
			fi
			bit=$((bit / 2))
		done
	done
	echo $n
}


first_ether() {
	local tries=0 dev
	while [ $tries -lt 50 ]; do
		for dev in /sys/class/net/*; do
			dev=${dev##*/}
			[ "$dev" = lo ] && continue
			[ "$(cat "/sys/class/net/$dev/type" 2>/dev/null)" = 1 ] && { echo "$dev"; return 0; }
		done
		tries=$((tries + 1))
		usleep 100000
	done
	return 1
}

dns0= dns1= host= domain= prefix=
if [ -n "$ip4" ]; then
	say "network: from netdev.ip"
	saved_ifs=$IFS
	IFS=:
	set -- $ip4
	IFS=$saved_ifs
	addr=${1%/*} gw=$2 dns0=$3 dns1=$4 host=$5 domain=$6
	prefix=${1#*/}
	[ "$prefix" = "$1" ] && prefix=32
elif [ -n "$addr" ]; then
	say "network: from netdev.ipv4_*"
	prefix=$(prefix_of "$mask") || { say "network: bad netdev.ipv4_subnet_mask=$mask"; addr=; }
fi

unescape() { printf '%b' "$(echo "$1" | sed 's/%\([0-9A-Fa-f][0-9A-Fa-f]\)/\\x\1/g')"; }

# mount_share TAG DIR [TYPE OPTIONS]: the virtio-fs (or TYPE) TAG on DIR (the device may take a
# moment to appear)
mount_share() {
	local tries=0
	mkdir -p "$2"
	while ! err=$(mount -t "${3:-virtiofs}" ${4:+-o "$4"} "$1" "$2" 2>&1); do
		tries=$((tries + 1))
		[ $tries -ge 50 ] && { say "mount $1: $err"; return 1; }
		usleep 100000
	done
}

# mount_disk DEV: the ext4 file system on /dev/DEV on /run/runu/disk (the device may take a moment)
mount_disk() {
	local tries=0
	mkdir -p /run/runu/disk
	while [ ! -b "/dev/$1" ]; do
		tries=$((tries + 1))
		[ $tries -ge 50 ] && { say "disk $1: no such device"; return 1; }
		usleep 100000
	done
	# read-write asked; on a read-only device the kernel refuses that and busybox mounts it read-only
	if ! mount -t ext4 "/dev/$1" /run/runu/disk 2>/dev/null; then
		say "disk $1: fail"
		return 1
	fi
	local src dir type opts rest
	while read -r src dir type opts rest; do
		[ "$dir" = /run/runu/disk ] && say "disk $1: ${opts%%,*}"
	done < /proc/mounts
}

if [ -n "$shares$root" ]; then
	load_modules net  # the virtio transports (a module is listed in the first group that needs it)
	load_modules fs
	if [ -n "$disk" ]; then
		load_modules blk
		mount_disk "$disk" || disk=
	fi
	for share in $shares; do
		IFS=: read -r tag dest mode file <<-END
		$share
		END
		dest=$(unescape "$dest")
		result=fail
		if [ -n "$disk" ]; then
			from=/run/runu/disk/$tag
		else
			from=/run/runu/$tag
		fi
		if [ -n "$disk" ] || grep -q " $from " /proc/mounts || mount_share "$tag" "$from"; then
			if [ -n "$file" ]; then
				mkdir -p "${dest%/*}"
				[ -e "$dest" ] || touch "$dest"
				mount --bind "$from/$(unescape "$file")" "$dest" && result=ok
			else
				mkdir -p "$dest"
				mount --bind "$from" "$dest" && result=ok
			fi
		fi
		say "mount $dest ($mode): $result"
	done
	if [ -n "$root" ]; then
		if mount_share "${root%%:*}" /newroot; then
			say "root: ${root%%:*} on /newroot (${root#*:})"
		else
			say "root: fail"
		fi
	fi
fi
if [ -n "$ninep" ]; then
	load_modules net
	load_modules 9p
fi
for share in $ninep; do
	IFS=: read -r tag dir opts <<-END
	$share
	END
	if mount_share "$tag" "$dir" 9p "trans=virtio,version=9p2000.L${opts:+,$opts}"; then
		say "mount9p $dir: ok $(awk -v d="$dir" '$2 == d { print $4 }' /proc/mounts)"
	else
		say "mount9p $dir: fail"
	fi
done
for path in $cats; do
	path=$(unescape "$path")
	if line=$(head -n 1 "$path" 2>/dev/null); then
		say "cat $path: $line"
	else
		say "cat $path: fail"
	fi
done
for path in $writes; do
	path=$(unescape "$path")
	if echo "written by the guest" > "$path" 2>/dev/null; then
		say "write $path: ok"
	else
		say "write $path: fail"
	fi
done
for spec in $zerofiles; do
	if dd if=/dev/zero of="${spec%:*}" bs=1048576 count="${spec##*:}" 2>/dev/null; then
		say "zerofile ${spec%:*}: ok"
	else
		say "zerofile ${spec%:*}: fail"
	fi
done
# centiseconds since boot
now() { local up rest; read -r up rest < /proc/uptime; echo $(( ${up%.*} * 100 + 1${up#*.} - 100 )); }
for path in $readbenches; do
	t0=$(now)
	bytes=$(cat "$path" | wc -c)
	say "readbench $path: $bytes bytes in $(( $(now) - t0 )) cs"
done
for dir in $createbenches; do
	mkdir -p "$dir"
	t0=$(now)
	i=0
	while [ $i -lt 1000 ]; do
		echo "$i" > "$dir/f$i"
		i=$((i + 1))
	done
	say "createbench $dir: 1000 files in $(( $(now) - t0 )) cs"
done

ip link set lo up
if [ -n "$addr" ]; then
	load_modules net
	if ! dev=$(first_ether); then
		say "network: no ethernet device (is there a virtio-net device?)"
	elif ! ip addr add "$addr/$prefix" dev "$dev" || ! ip link set "$dev" up; then
		say "network: cannot configure $dev with $addr/$prefix"
	else
		say "network: $dev $addr/$prefix mac $(cat "/sys/class/net/$dev/address")"
		if [ -n "$gw" ]; then
			if ip route add default via "$gw" dev "$dev"; then
				say "network: default via $gw"
			else
				say "network: cannot add default route via $gw"
			fi
		fi
		if [ -n "$dns0$dns1$domain" ]; then
			{
				[ -n "$domain" ] && echo "search $domain"
				for server in $dns0 $dns1; do echo "nameserver $server"; done
			} > /etc/resolv.conf
			say "network: dns ${dns0:--} ${dns1:--} search ${domain:--}"
		fi
		if [ -n "$host" ]; then
			hostname "$host"
			say "network: hostname $(hostname)"
		fi
	fi
fi

for target in $pings; do
	result=fail
	n=0
	while [ $n -lt 5 ]; do
		if ping -c 1 -W 1 "$target" >/dev/null 2>&1; then
			result=ok
			break
		fi
		n=$((n + 1))
	done
	say "ping $target: $result"
done

for port in $serves; do
	mkdir -p "/www/$port"
	echo "runu-linux-guest http $port" > "/www/$port/index.html"
	if httpd -p "$port" -h "/www/$port"; then
		say "http: serving on $port"
	else
		say "http: cannot serve on $port"
	fi
done

if [ -n "$panic" ]; then
	say "panicking"
	echo c > /proc/sysrq-trigger
fi
# The power button: the kernel's ACPI `button` driver reports it as KEY_POWER on an input device
# (evdev); busybox acpid runs /etc/acpi/PWRF/00000080 for it, which tells this shell (PID 1).
watch_power_button() {
	load_modules acpi
	mkdir -p /etc/acpi/PWRF
	printf '#!/bin/sh\nkill -USR1 1\n' > /etc/acpi/PWRF/00000080
	chmod 755 /etc/acpi/PWRF/00000080
	# In the foreground (backgrounded by the shell) so that its pid is known: "idle" must not be
	# said before acpid has the input devices open, or a power-off request sent on "idle" is lost.
	acpid -f -c /etc/acpi -l /dev/null &
	local pid=$! tries=0
	while ! ls -l "/proc/$pid/fd" 2>/dev/null | grep -q /dev/input/event; do
		tries=$((tries + 1))
		if [ $tries -ge 200 ] || [ ! -d "/proc/$pid" ]; then
			say "acpid: no input device open after $tries tries; the power button may be missed"
			return 1
		fi
		usleep 50000
	done
	[ $tries -gt 0 ] && say "acpid: input device open after $tries tries"
	return 0
}

if [ -n "$idle" ]; then
	trap 'say "power button: powering off"; poweroff -f' USR1
	watch_power_button
	say "idle"
	while :; do
		sleep 3600 &
		wait $!
	done
fi
say "powering off"
poweroff -f
# Not reached unless the machine cannot power off (no ACPI): a reset ends QEMU with -no-reboot.
reboot -f
while :; do sleep 3600; done
